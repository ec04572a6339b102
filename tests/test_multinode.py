"""Pre-training across nodes: two ``torchrun`` agents (``--nnodes=2``, c10d rendezvous on 127.0.0.1, gloo, one
process each) stand in for two machines. Each "node" gets its own volume cache folder, as node-local disks would:
each must be built once, by its node's first process, with no half-written file left."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys

import pytest
from conftest import BUNDLES

from custom.weights.checkpoint import safe_load

pytestmark = pytest.mark.slow

BUNDLE_DIR = os.path.join(BUNDLES, "t3d_pretrain")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pretraining_runs_on_two_nodes_with_node_local_caches(tmp_path, synthetic_pairs, offline_text_encoder):
    port = _free_port()
    agents = []
    for node in range(2):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=t3d-two-nodes",
            "-m", "monai.bundle", "run",
            "--config_file", "['configs/train.json','configs/cpu_toy.json','configs/multi_gpu_train.json']",
            "--bundle_root", str(tmp_path / f"node{node}"), "--dataset_dir", synthetic_pairs,
            "--cache_dir", str(tmp_path / f"node{node}_cache"), "--text_encoder_name", offline_text_encoder,
            "--batch_size", "2", "--max_epochs", "1", "--val_interval", "1",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        agents.append(
            subprocess.Popen(
                command, cwd=BUNDLE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [agent.communicate(timeout=600)[0] for agent in agents]
    for node, (agent, output) in enumerate(zip(agents, outputs)):
        assert agent.returncode == 0, f"node {node}:\n{output[-4000:]}"
    # 8 training studies over a world of 2 processes on 2 nodes, batch 2 each: 2 iterations in the epoch
    checkpoint = safe_load(str(tmp_path / "node0" / "models" / "checkpoint_last.pt"))
    assert checkpoint["iteration"] == 2
    assert not glob.glob(str(tmp_path / "node1" / "models" / "*.pt"))  # only global rank 0 writes models
    for node in range(2):
        cache = tmp_path / f"node{node}_cache"
        assert len(glob.glob(str(cache / "*.json"))) == 12  # 8 training + 4 validation volumes, each once
        assert not [name for name in os.listdir(cache) if ".tmp" in name]
