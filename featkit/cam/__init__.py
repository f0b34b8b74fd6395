"""Stage 4: class activation maps from linear weights, their boxes, and localization scores."""

from featkit.cam.boxer import CamBoxer
from featkit.cam.boxes import box_from_cam, iou, localization_accuracy, max_box_acc
from featkit.cam.calibration import Calibration, calibrate
from featkit.cam.foreground import ForegroundModel, fit_foreground
from featkit.cam.localization import LocalizationReport, localize
from featkit.cam.maps import CamOptions, class_activation_maps, normalize_cam, upsample
from featkit.cam.wsol import WsolBoxEvaluator, wsol_max_box_acc

__all__ = [
    "CamBoxer",
    "CamOptions",
    "Calibration",
    "ForegroundModel",
    "LocalizationReport",
    "WsolBoxEvaluator",
    "box_from_cam",
    "calibrate",
    "class_activation_maps",
    "fit_foreground",
    "iou",
    "localization_accuracy",
    "localize",
    "max_box_acc",
    "normalize_cam",
    "upsample",
    "wsol_max_box_acc",
]
