"""Caffe's message types, defined here in Python (no Caffe, no protoc, no compiled schema).

Only the parts of caffe.proto that deploy files and ``.caffemodel`` weights of
classification nets use are declared, with Caffe's field numbers and defaults,
so the ``protobuf`` package can read both the text (prototxt) and the binary
(caffemodel) form. Both layer formats are here: ``layer`` (LayerParameter,
string types) and the older ``layers`` (V1LayerParameter, enum types), which
the VGG16-CAM and AlexNet-CAM files still use. Tests write synthetic
caffemodels with these same classes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "caffe"

# (name, number, type, label, type_name or default); type_name for messages/enums is relative to the package
_Field = tuple[str, int, int, int, str]

_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_STR, _FLOAT, _DOUBLE, _BOOL = _F.TYPE_STRING, _F.TYPE_FLOAT, _F.TYPE_DOUBLE, _F.TYPE_BOOL
_I32, _I64, _U32 = _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32
_MSG, _ENUM = _F.TYPE_MESSAGE, _F.TYPE_ENUM

V1_LAYER_TYPES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
    "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
    "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33,
    "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
}
"""Every value of V1LayerParameter.LayerType, so any V1 file parses and an unsupported type is named."""

_ENGINE = {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}

# message name -> (fields, nested enums)
_MESSAGES: dict[str, tuple[list[_Field], dict[str, dict[str, int]]]] = {
    "BlobShape": ([("dim", 1, _I64, _REP, "")], {}),
    "BlobProto": ([
        ("shape", 7, _MSG, _OPT, "BlobShape"),
        ("data", 5, _FLOAT, _REP, ""),
        ("diff", 6, _FLOAT, _REP, ""),
        ("double_data", 8, _DOUBLE, _REP, ""),
        ("double_diff", 9, _DOUBLE, _REP, ""),
        ("num", 1, _I32, _OPT, "0"),
        ("channels", 2, _I32, _OPT, "0"),
        ("height", 3, _I32, _OPT, "0"),
        ("width", 4, _I32, _OPT, "0"),
    ], {}),
    "FillerParameter": ([
        ("type", 1, _STR, _OPT, "constant"),
        ("value", 2, _FLOAT, _OPT, "0"),
        ("min", 3, _FLOAT, _OPT, "0"),
        ("max", 4, _FLOAT, _OPT, "1"),
        ("mean", 5, _FLOAT, _OPT, "0"),
        ("std", 6, _FLOAT, _OPT, "1"),
        ("sparse", 7, _I32, _OPT, "-1"),
        ("variance_norm", 8, _ENUM, _OPT, "FillerParameter.VarianceNorm"),
    ], {"VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2}}),
    "NetState": ([
        ("phase", 1, _ENUM, _OPT, "Phase"),
        ("level", 2, _I32, _OPT, "0"),
        ("stage", 3, _STR, _REP, ""),
    ], {}),
    "NetStateRule": ([
        ("phase", 1, _ENUM, _OPT, "Phase"),
        ("min_level", 2, _I32, _OPT, ""),
        ("max_level", 3, _I32, _OPT, ""),
        ("stage", 4, _STR, _REP, ""),
        ("not_stage", 5, _STR, _REP, ""),
    ], {}),
    "ParamSpec": ([
        ("name", 1, _STR, _OPT, ""),
        ("share_mode", 2, _ENUM, _OPT, "ParamSpec.DimCheckMode"),
        ("lr_mult", 3, _FLOAT, _OPT, "1"),
        ("decay_mult", 4, _FLOAT, _OPT, "1"),
    ], {"DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1}}),
    "TransformationParameter": ([
        ("scale", 1, _FLOAT, _OPT, "1"),
        ("mirror", 2, _BOOL, _OPT, "false"),
        ("crop_size", 3, _U32, _OPT, "0"),
        ("mean_file", 4, _STR, _OPT, ""),
        ("mean_value", 5, _FLOAT, _REP, ""),
        ("force_color", 6, _BOOL, _OPT, "false"),
        ("force_gray", 7, _BOOL, _OPT, "false"),
    ], {}),
    "ConvolutionParameter": ([
        ("num_output", 1, _U32, _OPT, ""),
        ("bias_term", 2, _BOOL, _OPT, "true"),
        ("pad", 3, _U32, _REP, ""),
        ("kernel_size", 4, _U32, _REP, ""),
        ("stride", 6, _U32, _REP, ""),
        ("dilation", 18, _U32, _REP, ""),
        ("pad_h", 9, _U32, _OPT, "0"),
        ("pad_w", 10, _U32, _OPT, "0"),
        ("kernel_h", 11, _U32, _OPT, ""),
        ("kernel_w", 12, _U32, _OPT, ""),
        ("stride_h", 13, _U32, _OPT, ""),
        ("stride_w", 14, _U32, _OPT, ""),
        ("group", 5, _U32, _OPT, "1"),
        ("weight_filler", 7, _MSG, _OPT, "FillerParameter"),
        ("bias_filler", 8, _MSG, _OPT, "FillerParameter"),
        ("engine", 15, _ENUM, _OPT, "ConvolutionParameter.Engine"),
        ("axis", 16, _I32, _OPT, "1"),
        ("force_nd_im2col", 17, _BOOL, _OPT, "false"),
    ], {"Engine": _ENGINE}),
    "PoolingParameter": ([
        ("pool", 1, _ENUM, _OPT, "PoolingParameter.PoolMethod"),
        ("pad", 4, _U32, _OPT, "0"),
        ("pad_h", 9, _U32, _OPT, "0"),
        ("pad_w", 10, _U32, _OPT, "0"),
        ("kernel_size", 2, _U32, _OPT, ""),
        ("kernel_h", 5, _U32, _OPT, ""),
        ("kernel_w", 6, _U32, _OPT, ""),
        ("stride", 3, _U32, _OPT, "1"),
        ("stride_h", 7, _U32, _OPT, ""),
        ("stride_w", 8, _U32, _OPT, ""),
        ("engine", 11, _ENUM, _OPT, "PoolingParameter.Engine"),
        ("global_pooling", 12, _BOOL, _OPT, "false"),
        ("round_mode", 13, _ENUM, _OPT, "PoolingParameter.RoundMode"),
    ], {"PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}, "Engine": _ENGINE,
        "RoundMode": {"CEIL": 0, "FLOOR": 1}}),
    "LRNParameter": ([
        ("local_size", 1, _U32, _OPT, "5"),
        ("alpha", 2, _FLOAT, _OPT, "1"),
        ("beta", 3, _FLOAT, _OPT, "0.75"),
        ("norm_region", 4, _ENUM, _OPT, "LRNParameter.NormRegion"),
        ("k", 5, _FLOAT, _OPT, "1"),
        ("engine", 6, _ENUM, _OPT, "LRNParameter.Engine"),
    ], {"NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}, "Engine": _ENGINE}),
    "InnerProductParameter": ([
        ("num_output", 1, _U32, _OPT, ""),
        ("bias_term", 2, _BOOL, _OPT, "true"),
        ("weight_filler", 3, _MSG, _OPT, "FillerParameter"),
        ("bias_filler", 4, _MSG, _OPT, "FillerParameter"),
        ("axis", 5, _I32, _OPT, "1"),
        ("transpose", 6, _BOOL, _OPT, "false"),
    ], {}),
    "ConcatParameter": ([
        ("axis", 2, _I32, _OPT, "1"),
        ("concat_dim", 1, _U32, _OPT, "1"),
    ], {}),
    "DropoutParameter": ([
        ("dropout_ratio", 1, _FLOAT, _OPT, "0.5"),
        ("scale_train", 2, _BOOL, _OPT, "true"),
    ], {}),
    "SoftmaxParameter": ([
        ("engine", 1, _ENUM, _OPT, "SoftmaxParameter.Engine"),
        ("axis", 2, _I32, _OPT, "1"),
    ], {"Engine": _ENGINE}),
    "ReLUParameter": ([
        ("negative_slope", 1, _FLOAT, _OPT, "0"),
        ("engine", 2, _ENUM, _OPT, "ReLUParameter.Engine"),
    ], {"Engine": _ENGINE}),
    "InputParameter": ([("shape", 1, _MSG, _REP, "BlobShape")], {}),
    "LayerParameter": ([
        ("name", 1, _STR, _OPT, ""),
        ("type", 2, _STR, _OPT, ""),
        ("bottom", 3, _STR, _REP, ""),
        ("top", 4, _STR, _REP, ""),
        ("phase", 10, _ENUM, _OPT, "Phase"),
        ("loss_weight", 5, _FLOAT, _REP, ""),
        ("param", 6, _MSG, _REP, "ParamSpec"),
        ("blobs", 7, _MSG, _REP, "BlobProto"),
        ("propagate_down", 11, _BOOL, _REP, ""),
        ("include", 8, _MSG, _REP, "NetStateRule"),
        ("exclude", 9, _MSG, _REP, "NetStateRule"),
        ("transform_param", 100, _MSG, _OPT, "TransformationParameter"),
        ("concat_param", 104, _MSG, _OPT, "ConcatParameter"),
        ("convolution_param", 106, _MSG, _OPT, "ConvolutionParameter"),
        ("dropout_param", 108, _MSG, _OPT, "DropoutParameter"),
        ("inner_product_param", 117, _MSG, _OPT, "InnerProductParameter"),
        ("input_param", 143, _MSG, _OPT, "InputParameter"),
        ("lrn_param", 118, _MSG, _OPT, "LRNParameter"),
        ("pooling_param", 121, _MSG, _OPT, "PoolingParameter"),
        ("relu_param", 123, _MSG, _OPT, "ReLUParameter"),
        ("softmax_param", 125, _MSG, _OPT, "SoftmaxParameter"),
    ], {}),
    "V1LayerParameter": ([
        ("bottom", 2, _STR, _REP, ""),
        ("top", 3, _STR, _REP, ""),
        ("name", 4, _STR, _OPT, ""),
        ("include", 32, _MSG, _REP, "NetStateRule"),
        ("exclude", 33, _MSG, _REP, "NetStateRule"),
        ("type", 5, _ENUM, _OPT, "V1LayerParameter.LayerType"),
        ("blobs", 6, _MSG, _REP, "BlobProto"),
        ("param", 1001, _STR, _REP, ""),
        ("blob_share_mode", 1002, _ENUM, _REP, "V1LayerParameter.DimCheckMode"),
        ("blobs_lr", 7, _FLOAT, _REP, ""),
        ("weight_decay", 8, _FLOAT, _REP, ""),
        ("loss_weight", 35, _FLOAT, _REP, ""),
        ("concat_param", 9, _MSG, _OPT, "ConcatParameter"),
        ("convolution_param", 10, _MSG, _OPT, "ConvolutionParameter"),
        ("dropout_param", 12, _MSG, _OPT, "DropoutParameter"),
        ("inner_product_param", 17, _MSG, _OPT, "InnerProductParameter"),
        ("lrn_param", 18, _MSG, _OPT, "LRNParameter"),
        ("pooling_param", 19, _MSG, _OPT, "PoolingParameter"),
        ("relu_param", 30, _MSG, _OPT, "ReLUParameter"),
        ("softmax_param", 39, _MSG, _OPT, "SoftmaxParameter"),
        ("transform_param", 36, _MSG, _OPT, "TransformationParameter"),
    ], {"LayerType": V1_LAYER_TYPES, "DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1}}),
    "NetParameter": ([
        ("name", 1, _STR, _OPT, ""),
        ("input", 3, _STR, _REP, ""),
        ("input_shape", 8, _MSG, _REP, "BlobShape"),
        ("input_dim", 4, _I32, _REP, ""),
        ("force_backward", 5, _BOOL, _OPT, "false"),
        ("state", 6, _MSG, _OPT, "NetState"),
        ("debug_info", 7, _BOOL, _OPT, "false"),
        ("layer", 100, _MSG, _REP, "LayerParameter"),
        ("layers", 2, _MSG, _REP, "V1LayerParameter"),
    ], {}),
}

_DEFAULT_ENUM = {"NetState.phase": "TEST"}
"""Enum defaults other than the first value (proto2's implicit default)."""

_PACKED = {"BlobShape.dim", "BlobProto.data", "BlobProto.diff", "BlobProto.double_data", "BlobProto.double_diff"}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="featkit_caffe.proto", package=_PACKAGE, syntax="proto2")
    phase = fdp.enum_type.add(name="Phase")
    for name, number in (("TRAIN", 0), ("TEST", 1)):
        phase.value.add(name=name, number=number)
    for message_name, (fields, enums) in _MESSAGES.items():
        message = fdp.message_type.add(name=message_name)
        for enum_name, values in enums.items():
            enum = message.enum_type.add(name=enum_name)
            for value_name, number in values.items():
                enum.value.add(name=value_name, number=number)
        for name, number, kind, label, extra in fields:
            field = message.field.add(name=name, number=number, type=kind, label=label)
            key = f"{message_name}.{name}"
            if kind in (_MSG, _ENUM):
                field.type_name = f".{_PACKAGE}.{extra}"
                if key in _DEFAULT_ENUM:
                    field.default_value = _DEFAULT_ENUM[key]
            elif extra and label == _OPT:
                field.default_value = extra
            if key in _PACKED:
                field.options.packed = True
    return fdp


def _message_classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    classes: dict[str, type[Message]] = {}
    for name in _MESSAGES:
        descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")
        get_class: Any = getattr(message_factory, "GetMessageClass", None)
        if get_class is None:  # protobuf < 4.22
            get_class = message_factory.MessageFactory(pool).GetPrototype
        classes[name] = get_class(descriptor)
    return classes


_CLASSES = _message_classes()

NetParameter: type[Message] = _CLASSES["NetParameter"]
LayerParameter: type[Message] = _CLASSES["LayerParameter"]
V1LayerParameter: type[Message] = _CLASSES["V1LayerParameter"]
BlobProto: type[Message] = _CLASSES["BlobProto"]
BlobShape: type[Message] = _CLASSES["BlobShape"]
