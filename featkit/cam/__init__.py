"""Stage 4: class activation maps from linear weights, their boxes, and localization scores."""

from featkit.cam.boxer import CamBoxer
from featkit.cam.boxes import box_from_cam, iou, localization_accuracy, max_box_acc
from featkit.cam.localization import LocalizationReport, localize
from featkit.cam.maps import CamOptions, class_activation_maps, normalize_cam, upsample
from featkit.cam.wsol import WsolBoxEvaluator, wsol_max_box_acc

__all__ = [
    "CamBoxer",
    "CamOptions",
    "LocalizationReport",
    "WsolBoxEvaluator",
    "box_from_cam",
    "class_activation_maps",
    "iou",
    "localization_accuracy",
    "localize",
    "max_box_acc",
    "normalize_cam",
    "upsample",
    "wsol_max_box_acc",
]
