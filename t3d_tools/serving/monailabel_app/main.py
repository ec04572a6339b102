"""MONAI Label app for the T3D bundles: ``monailabel start_server --app <this folder> --studies DIR --conf models
t3d_bimcv_cls[,t3d_btcv_seg,...] --conf zoo_source github --conf sam2 false``.

Bundles are read from ``model/<name>`` (no download: ``zoo_source github`` with the folder present never goes to the
network). MONAI Label's stock bundle task types a model from its folder name and appends a spatial restore to the
post-processing, which is right for label maps and breaks a vector of class scores; here the type comes from the
bundle's ``metadata.json`` instead: an output of type ``probabilities`` (or format ``classification``) is served as a
classification model without the restore, anything else as segmentation exactly as the stock app does.
Runs inside MONAI Label's venv; it imports nothing from this repository (the bundles carry their vendored code).
"""

import json
import logging
import os

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import get_bundle_models

logger = logging.getLogger(__name__)

CLASSIFICATION_OUTPUTS = {"probabilities", "probability", "classification", "scores"}


def bundle_infer_type(bundle_dir: str) -> str:
    """``classification`` when the bundle's first output is a per-class score vector, else ``segmentation``."""
    with open(os.path.join(bundle_dir, "configs", "metadata.json"), encoding="utf-8") as f:
        outputs = json.load(f)["network_data_format"]["outputs"]
    output = next(iter(outputs.values()))
    kinds = {str(output.get("type", "")).lower(), str(output.get("format", "")).lower()}
    return InferType.CLASSIFICATION if kinds & CLASSIFICATION_OUTPUTS else InferType.SEGMENTATION


class MyApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.models = get_bundle_models(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"T3D bundles ({monailabel.__version__})",
            description="T3D segmentation and classification bundles",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            infer_type = bundle_infer_type(path)
            task = BundleInferTask(
                path, self.conf, type=infer_type, add_post_restore=infer_type != InferType.CLASSIFICATION
            )
            if not task.is_valid():
                raise RuntimeError(f"{path}: not a servable bundle (needs configs/inference.json and models/model.pt)")
            logger.info(f"+++ Adding Inferer:: {name} ({infer_type}) => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {}  # training runs through `python -m monai.bundle run`, not through the labelling server
