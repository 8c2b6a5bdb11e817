from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW_RGB8: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]

class DepthEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPTH_ENCODING_UNSPECIFIED: _ClassVar[DepthEncoding]
    DEPTH_ENCODING_FLOAT16_M: _ClassVar[DepthEncoding]
    DEPTH_ENCODING_UINT16_MM: _ClassVar[DepthEncoding]

class Retrieval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_UNSPECIFIED: _ClassVar[Retrieval]
    RETRIEVAL_COVERAGE: _ClassVar[Retrieval]
    RETRIEVAL_IOU: _ClassVar[Retrieval]
    RETRIEVAL_RECENT: _ClassVar[Retrieval]
    RETRIEVAL_RANDOM: _ClassVar[Retrieval]
    RETRIEVAL_GLOBAL: _ClassVar[Retrieval]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_ADDED: _ClassVar[ChangeKind]
    CHANGE_KIND_CHANGED: _ClassVar[ChangeKind]
    CHANGE_KIND_REMOVED: _ClassVar[ChangeKind]

class Occupancy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OCCUPANCY_UNSPECIFIED: _ClassVar[Occupancy]
    OCCUPANCY_UNKNOWN: _ClassVar[Occupancy]
    OCCUPANCY_FREE: _ClassVar[Occupancy]
    OCCUPANCY_OCCUPIED: _ClassVar[Occupancy]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_RAW_RGB8: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
DEPTH_ENCODING_UNSPECIFIED: DepthEncoding
DEPTH_ENCODING_FLOAT16_M: DepthEncoding
DEPTH_ENCODING_UINT16_MM: DepthEncoding
RETRIEVAL_UNSPECIFIED: Retrieval
RETRIEVAL_COVERAGE: Retrieval
RETRIEVAL_IOU: Retrieval
RETRIEVAL_RECENT: Retrieval
RETRIEVAL_RANDOM: Retrieval
RETRIEVAL_GLOBAL: Retrieval
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_ADDED: ChangeKind
CHANGE_KIND_CHANGED: ChangeKind
CHANGE_KIND_REMOVED: ChangeKind
OCCUPANCY_UNSPECIFIED: Occupancy
OCCUPANCY_UNKNOWN: Occupancy
OCCUPANCY_FREE: Occupancy
OCCUPANCY_OCCUPIED: Occupancy

class Vec3(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Quaternion(_message.Message):
    __slots__ = ("qw", "qx", "qy", "qz")
    QW_FIELD_NUMBER: _ClassVar[int]
    QX_FIELD_NUMBER: _ClassVar[int]
    QY_FIELD_NUMBER: _ClassVar[int]
    QZ_FIELD_NUMBER: _ClassVar[int]
    qw: float
    qx: float
    qy: float
    qz: float
    def __init__(self, qw: _Optional[float] = ..., qx: _Optional[float] = ..., qy: _Optional[float] = ..., qz: _Optional[float] = ...) -> None: ...

class PositionQuaternion(_message.Message):
    __slots__ = ("position", "rotation")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    position: Vec3
    rotation: Quaternion
    def __init__(self, position: _Optional[_Union[Vec3, _Mapping]] = ..., rotation: _Optional[_Union[Quaternion, _Mapping]] = ...) -> None: ...

class Matrix4x4(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Pose(_message.Message):
    __slots__ = ("position_quaternion", "matrix")
    POSITION_QUATERNION_FIELD_NUMBER: _ClassVar[int]
    MATRIX_FIELD_NUMBER: _ClassVar[int]
    position_quaternion: PositionQuaternion
    matrix: Matrix4x4
    def __init__(self, position_quaternion: _Optional[_Union[PositionQuaternion, _Mapping]] = ..., matrix: _Optional[_Union[Matrix4x4, _Mapping]] = ...) -> None: ...

class Intrinsics(_message.Message):
    __slots__ = ("fx", "fy", "cx", "cy", "width", "height")
    FX_FIELD_NUMBER: _ClassVar[int]
    FY_FIELD_NUMBER: _ClassVar[int]
    CX_FIELD_NUMBER: _ClassVar[int]
    CY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    def __init__(self, fx: _Optional[float] = ..., fy: _Optional[float] = ..., cx: _Optional[float] = ..., cy: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("min_m", "max_m")
    MIN_M_FIELD_NUMBER: _ClassVar[int]
    MAX_M_FIELD_NUMBER: _ClassVar[int]
    min_m: Vec3
    max_m: Vec3
    def __init__(self, min_m: _Optional[_Union[Vec3, _Mapping]] = ..., max_m: _Optional[_Union[Vec3, _Mapping]] = ...) -> None: ...

class OrientedBox(_message.Message):
    __slots__ = ("center_m", "half_extents_m", "rotation")
    CENTER_M_FIELD_NUMBER: _ClassVar[int]
    HALF_EXTENTS_M_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    center_m: Vec3
    half_extents_m: Vec3
    rotation: Quaternion
    def __init__(self, center_m: _Optional[_Union[Vec3, _Mapping]] = ..., half_extents_m: _Optional[_Union[Vec3, _Mapping]] = ..., rotation: _Optional[_Union[Quaternion, _Mapping]] = ...) -> None: ...

class Sphere(_message.Message):
    __slots__ = ("center_m", "radius_m")
    CENTER_M_FIELD_NUMBER: _ClassVar[int]
    RADIUS_M_FIELD_NUMBER: _ClassVar[int]
    center_m: Vec3
    radius_m: float
    def __init__(self, center_m: _Optional[_Union[Vec3, _Mapping]] = ..., radius_m: _Optional[float] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("box", "oriented_box", "sphere")
    BOX_FIELD_NUMBER: _ClassVar[int]
    ORIENTED_BOX_FIELD_NUMBER: _ClassVar[int]
    SPHERE_FIELD_NUMBER: _ClassVar[int]
    box: Box
    oriented_box: OrientedBox
    sphere: Sphere
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., oriented_box: _Optional[_Union[OrientedBox, _Mapping]] = ..., sphere: _Optional[_Union[Sphere, _Mapping]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("width", "height", "encoding", "data")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    encoding: ImageEncoding
    data: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class DepthImage(_message.Message):
    __slots__ = ("width", "height", "encoding", "data")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    encoding: DepthEncoding
    data: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[DepthEncoding, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("width", "height", "packed_bits")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PACKED_BITS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    packed_bits: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., packed_bits: _Optional[bytes] = ...) -> None: ...

class LabelImage(_message.Message):
    __slots__ = ("width", "height", "data")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    data: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class NormalImage(_message.Message):
    __slots__ = ("width", "height", "data")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    data: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class FrameFormat(_message.Message):
    __slots__ = ("image_encoding", "jpeg_quality", "depth_encoding", "include_coverage_mask", "include_semantic", "include_instance", "include_normals")
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    DEPTH_ENCODING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COVERAGE_MASK_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NORMALS_FIELD_NUMBER: _ClassVar[int]
    image_encoding: ImageEncoding
    jpeg_quality: int
    depth_encoding: DepthEncoding
    include_coverage_mask: bool
    include_semantic: bool
    include_instance: bool
    include_normals: bool
    def __init__(self, image_encoding: _Optional[_Union[ImageEncoding, str]] = ..., jpeg_quality: _Optional[int] = ..., depth_encoding: _Optional[_Union[DepthEncoding, str]] = ..., include_coverage_mask: _Optional[bool] = ..., include_semantic: _Optional[bool] = ..., include_instance: _Optional[bool] = ..., include_normals: _Optional[bool] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("frame_id", "pose", "version", "rgb", "depth", "coverage", "coverage_mask", "semantic", "instance", "normals")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_MASK_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    NORMALS_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    pose: Pose
    version: int
    rgb: Image
    depth: DepthImage
    coverage: float
    coverage_mask: Mask
    semantic: LabelImage
    instance: LabelImage
    normals: NormalImage
    def __init__(self, frame_id: _Optional[int] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., version: _Optional[int] = ..., rgb: _Optional[_Union[Image, _Mapping]] = ..., depth: _Optional[_Union[DepthImage, _Mapping]] = ..., coverage: _Optional[float] = ..., coverage_mask: _Optional[_Union[Mask, _Mapping]] = ..., semantic: _Optional[_Union[LabelImage, _Mapping]] = ..., instance: _Optional[_Union[LabelImage, _Mapping]] = ..., normals: _Optional[_Union[NormalImage, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ("client_api_version",)
    CLIENT_API_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_api_version: str
    def __init__(self, client_api_version: _Optional[str] = ...) -> None: ...

class GeneratorInfo(_message.Message):
    __slots__ = ("name", "chunk_multiple", "chunk_offset", "max_frames", "max_width", "max_height", "size_multiple", "returns_depth")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    RETURNS_DEPTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    chunk_multiple: int
    chunk_offset: int
    max_frames: int
    max_width: int
    max_height: int
    size_multiple: int
    returns_depth: bool
    def __init__(self, name: _Optional[str] = ..., chunk_multiple: _Optional[int] = ..., chunk_offset: _Optional[int] = ..., max_frames: _Optional[int] = ..., max_width: _Optional[int] = ..., max_height: _Optional[int] = ..., size_multiple: _Optional[int] = ..., returns_depth: _Optional[bool] = ...) -> None: ...

class Conventions(_message.Message):
    __slots__ = ("world_frame", "camera_frame", "pose", "quaternion", "depth")
    WORLD_FRAME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FRAME_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    QUATERNION_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    world_frame: str
    camera_frame: str
    pose: str
    quaternion: str
    depth: str
    def __init__(self, world_frame: _Optional[str] = ..., camera_frame: _Optional[str] = ..., pose: _Optional[str] = ..., quaternion: _Optional[str] = ..., depth: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_poses_per_call", "max_message_bytes", "max_seed_frames", "max_pixels_per_call", "max_query_items", "max_insert_points", "max_ray_voxels", "max_shape_voxels", "max_rig_cameras", "max_queued_per_world", "max_queued_total", "engine_threads")
    MAX_POSES_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_INSERT_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RAY_VOXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_SHAPE_VOXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_RIG_CAMERAS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_PER_WORLD_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_THREADS_FIELD_NUMBER: _ClassVar[int]
    max_poses_per_call: int
    max_message_bytes: int
    max_seed_frames: int
    max_pixels_per_call: int
    max_query_items: int
    max_insert_points: int
    max_ray_voxels: int
    max_shape_voxels: int
    max_rig_cameras: int
    max_queued_per_world: int
    max_queued_total: int
    engine_threads: int
    def __init__(self, max_poses_per_call: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_seed_frames: _Optional[int] = ..., max_pixels_per_call: _Optional[int] = ..., max_query_items: _Optional[int] = ..., max_insert_points: _Optional[int] = ..., max_ray_voxels: _Optional[int] = ..., max_shape_voxels: _Optional[int] = ..., max_rig_cameras: _Optional[int] = ..., max_queued_per_world: _Optional[int] = ..., max_queued_total: _Optional[int] = ..., engine_threads: _Optional[int] = ...) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("api_version", "server_version", "capabilities", "generator", "conventions", "limits", "image_encodings", "depth_encodings")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    server_version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    generator: GeneratorInfo
    conventions: Conventions
    limits: Limits
    image_encodings: _containers.RepeatedScalarFieldContainer[ImageEncoding]
    depth_encodings: _containers.RepeatedScalarFieldContainer[DepthEncoding]
    def __init__(self, api_version: _Optional[str] = ..., server_version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., generator: _Optional[_Union[GeneratorInfo, _Mapping]] = ..., conventions: _Optional[_Union[Conventions, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., image_encodings: _Optional[_Iterable[_Union[ImageEncoding, str]]] = ..., depth_encodings: _Optional[_Iterable[_Union[DepthEncoding, str]]] = ...) -> None: ...

class WorldConfig(_message.Message):
    __slots__ = ("voxel_size_m", "retrieval", "max_anchors", "seed", "confidence_levels", "default_min_confidence")
    VOXEL_SIZE_M_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    voxel_size_m: float
    retrieval: Retrieval
    max_anchors: int
    seed: int
    confidence_levels: _containers.RepeatedScalarFieldContainer[float]
    default_min_confidence: float
    def __init__(self, voxel_size_m: _Optional[float] = ..., retrieval: _Optional[_Union[Retrieval, str]] = ..., max_anchors: _Optional[int] = ..., seed: _Optional[int] = ..., confidence_levels: _Optional[_Iterable[float]] = ..., default_min_confidence: _Optional[float] = ...) -> None: ...

class SeedFrame(_message.Message):
    __slots__ = ("rgb", "depth", "pose", "semantic", "instance")
    RGB_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    rgb: Image
    depth: DepthImage
    pose: Pose
    semantic: LabelImage
    instance: LabelImage
    def __init__(self, rgb: _Optional[_Union[Image, _Mapping]] = ..., depth: _Optional[_Union[DepthImage, _Mapping]] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., semantic: _Optional[_Union[LabelImage, _Mapping]] = ..., instance: _Optional[_Union[LabelImage, _Mapping]] = ...) -> None: ...

class Seed(_message.Message):
    __slots__ = ("frames", "intrinsics", "prompt")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[SeedFrame]
    intrinsics: Intrinsics
    prompt: str
    def __init__(self, frames: _Optional[_Iterable[_Union[SeedFrame, _Mapping]]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., prompt: _Optional[str] = ...) -> None: ...

class WorldInfo(_message.Message):
    __slots__ = ("world_id", "loaded", "saved", "version", "intrinsics", "prompt", "config", "generator", "voxel_count", "frame_count")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    SAVED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    VOXEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    loaded: bool
    saved: bool
    version: int
    intrinsics: Intrinsics
    prompt: str
    config: WorldConfig
    generator: str
    voxel_count: int
    frame_count: int
    def __init__(self, world_id: _Optional[str] = ..., loaded: _Optional[bool] = ..., saved: _Optional[bool] = ..., version: _Optional[int] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., prompt: _Optional[str] = ..., config: _Optional[_Union[WorldConfig, _Mapping]] = ..., generator: _Optional[str] = ..., voxel_count: _Optional[int] = ..., frame_count: _Optional[int] = ...) -> None: ...

class CreateWorldRequest(_message.Message):
    __slots__ = ("world_id", "seed", "config", "record")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    seed: Seed
    config: WorldConfig
    record: bool
    def __init__(self, world_id: _Optional[str] = ..., seed: _Optional[_Union[Seed, _Mapping]] = ..., config: _Optional[_Union[WorldConfig, _Mapping]] = ..., record: _Optional[bool] = ...) -> None: ...

class CreateWorldResponse(_message.Message):
    __slots__ = ("world",)
    WORLD_FIELD_NUMBER: _ClassVar[int]
    world: WorldInfo
    def __init__(self, world: _Optional[_Union[WorldInfo, _Mapping]] = ...) -> None: ...

class GetWorldRequest(_message.Message):
    __slots__ = ("world_id",)
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    def __init__(self, world_id: _Optional[str] = ...) -> None: ...

class GetWorldResponse(_message.Message):
    __slots__ = ("world",)
    WORLD_FIELD_NUMBER: _ClassVar[int]
    world: WorldInfo
    def __init__(self, world: _Optional[_Union[WorldInfo, _Mapping]] = ...) -> None: ...

class ListWorldsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorldsResponse(_message.Message):
    __slots__ = ("worlds",)
    WORLDS_FIELD_NUMBER: _ClassVar[int]
    worlds: _containers.RepeatedCompositeFieldContainer[WorldInfo]
    def __init__(self, worlds: _Optional[_Iterable[_Union[WorldInfo, _Mapping]]] = ...) -> None: ...

class DeleteWorldRequest(_message.Message):
    __slots__ = ("world_id", "delete_saved")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    DELETE_SAVED_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    delete_saved: bool
    def __init__(self, world_id: _Optional[str] = ..., delete_saved: _Optional[bool] = ...) -> None: ...

class DeleteWorldResponse(_message.Message):
    __slots__ = ("unloaded", "deleted_saved")
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    DELETED_SAVED_FIELD_NUMBER: _ClassVar[int]
    unloaded: bool
    deleted_saved: bool
    def __init__(self, unloaded: _Optional[bool] = ..., deleted_saved: _Optional[bool] = ...) -> None: ...

class SaveWorldRequest(_message.Message):
    __slots__ = ("world_id",)
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    def __init__(self, world_id: _Optional[str] = ...) -> None: ...

class SaveWorldResponse(_message.Message):
    __slots__ = ("world",)
    WORLD_FIELD_NUMBER: _ClassVar[int]
    world: WorldInfo
    def __init__(self, world: _Optional[_Union[WorldInfo, _Mapping]] = ...) -> None: ...

class LoadWorldRequest(_message.Message):
    __slots__ = ("world_id",)
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    def __init__(self, world_id: _Optional[str] = ...) -> None: ...

class LoadWorldResponse(_message.Message):
    __slots__ = ("world",)
    WORLD_FIELD_NUMBER: _ClassVar[int]
    world: WorldInfo
    def __init__(self, world: _Optional[_Union[WorldInfo, _Mapping]] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("checkpoint_id", "version", "frame_count", "created_unix_s")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    version: int
    frame_count: int
    created_unix_s: float
    def __init__(self, checkpoint_id: _Optional[str] = ..., version: _Optional[int] = ..., frame_count: _Optional[int] = ..., created_unix_s: _Optional[float] = ...) -> None: ...

class ForkWorldRequest(_message.Message):
    __slots__ = ("world_id", "checkpoint_id", "new_world_id")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    checkpoint_id: str
    new_world_id: str
    def __init__(self, world_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., new_world_id: _Optional[str] = ...) -> None: ...

class ForkWorldResponse(_message.Message):
    __slots__ = ("world",)
    WORLD_FIELD_NUMBER: _ClassVar[int]
    world: WorldInfo
    def __init__(self, world: _Optional[_Union[WorldInfo, _Mapping]] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("world_id",)
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    def __init__(self, world_id: _Optional[str] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: CheckpointInfo
    def __init__(self, checkpoint: _Optional[_Union[CheckpointInfo, _Mapping]] = ...) -> None: ...

class RestoreWorldRequest(_message.Message):
    __slots__ = ("world_id", "checkpoint_id")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    checkpoint_id: str
    def __init__(self, world_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ...) -> None: ...

class RestoreWorldResponse(_message.Message):
    __slots__ = ("world",)
    WORLD_FIELD_NUMBER: _ClassVar[int]
    world: WorldInfo
    def __init__(self, world: _Optional[_Union[WorldInfo, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("world_id",)
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    def __init__(self, world_id: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointInfo]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[CheckpointInfo, _Mapping]]] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("world_id", "poses", "intrinsics", "format")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    POSES_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    poses: _containers.RepeatedCompositeFieldContainer[Pose]
    intrinsics: Intrinsics
    format: FrameFormat
    def __init__(self, world_id: _Optional[str] = ..., poses: _Optional[_Iterable[_Union[Pose, _Mapping]]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., format: _Optional[_Union[FrameFormat, _Mapping]] = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...

class DynamicMask(_message.Message):
    __slots__ = ("pose_index", "mask", "camera_index")
    POSE_INDEX_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    CAMERA_INDEX_FIELD_NUMBER: _ClassVar[int]
    pose_index: int
    mask: Mask
    camera_index: int
    def __init__(self, pose_index: _Optional[int] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ..., camera_index: _Optional[int] = ...) -> None: ...

class RigCamera(_message.Message):
    __slots__ = ("intrinsics", "mount")
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    intrinsics: Intrinsics
    mount: Pose
    def __init__(self, intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., mount: _Optional[_Union[Pose, _Mapping]] = ...) -> None: ...

class Rig(_message.Message):
    __slots__ = ("cameras",)
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    cameras: _containers.RepeatedCompositeFieldContainer[RigCamera]
    def __init__(self, cameras: _Optional[_Iterable[_Union[RigCamera, _Mapping]]] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("world_id", "poses", "intrinsics", "format", "dynamic_masks", "dynamic_boxes", "dynamic_box_semantic_classes", "dynamic_box_instance_ids", "prompt", "seed", "rig", "session_id", "sequence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    POSES_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_MASKS_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BOXES_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BOX_SEMANTIC_CLASSES_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BOX_INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RIG_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    poses: _containers.RepeatedCompositeFieldContainer[Pose]
    intrinsics: Intrinsics
    format: FrameFormat
    dynamic_masks: _containers.RepeatedCompositeFieldContainer[DynamicMask]
    dynamic_boxes: _containers.RepeatedCompositeFieldContainer[OrientedBox]
    dynamic_box_semantic_classes: _containers.RepeatedScalarFieldContainer[int]
    dynamic_box_instance_ids: _containers.RepeatedScalarFieldContainer[int]
    prompt: str
    seed: int
    rig: Rig
    session_id: str
    sequence: int
    def __init__(self, world_id: _Optional[str] = ..., poses: _Optional[_Iterable[_Union[Pose, _Mapping]]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., format: _Optional[_Union[FrameFormat, _Mapping]] = ..., dynamic_masks: _Optional[_Iterable[_Union[DynamicMask, _Mapping]]] = ..., dynamic_boxes: _Optional[_Iterable[_Union[OrientedBox, _Mapping]]] = ..., dynamic_box_semantic_classes: _Optional[_Iterable[int]] = ..., dynamic_box_instance_ids: _Optional[_Iterable[int]] = ..., prompt: _Optional[str] = ..., seed: _Optional[int] = ..., rig: _Optional[_Union[Rig, _Mapping]] = ..., session_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("request_index", "pose_index", "last_in_request", "frame", "timings_s", "replayed", "camera_index")
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    POSE_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_IN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_S_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    CAMERA_INDEX_FIELD_NUMBER: _ClassVar[int]
    request_index: int
    pose_index: int
    last_in_request: bool
    frame: Frame
    timings_s: _containers.ScalarMap[str, float]
    replayed: bool
    camera_index: int
    def __init__(self, request_index: _Optional[int] = ..., pose_index: _Optional[int] = ..., last_in_request: _Optional[bool] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., timings_s: _Optional[_Mapping[str, float]] = ..., replayed: _Optional[bool] = ..., camera_index: _Optional[int] = ...) -> None: ...

class StreamPointCloudRequest(_message.Message):
    __slots__ = ("world_id", "since_version", "follow", "max_chunk_bytes", "include_positions", "min_confidence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    since_version: int
    follow: bool
    max_chunk_bytes: int
    include_positions: bool
    min_confidence: float
    def __init__(self, world_id: _Optional[str] = ..., since_version: _Optional[int] = ..., follow: _Optional[bool] = ..., max_chunk_bytes: _Optional[int] = ..., include_positions: _Optional[bool] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class StreamPointCloudResponse(_message.Message):
    __slots__ = ("since_version", "version", "is_snapshot", "kind", "count", "keys", "positions_m", "colors", "flags", "voxel_size_m", "last_in_version", "confidence", "min_confidence")
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_M_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    VOXEL_SIZE_M_FIELD_NUMBER: _ClassVar[int]
    LAST_IN_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    since_version: int
    version: int
    is_snapshot: bool
    kind: ChangeKind
    count: int
    keys: bytes
    positions_m: bytes
    colors: bytes
    flags: bytes
    voxel_size_m: float
    last_in_version: bool
    confidence: bytes
    min_confidence: float
    def __init__(self, since_version: _Optional[int] = ..., version: _Optional[int] = ..., is_snapshot: _Optional[bool] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., count: _Optional[int] = ..., keys: _Optional[bytes] = ..., positions_m: _Optional[bytes] = ..., colors: _Optional[bytes] = ..., flags: _Optional[bytes] = ..., voxel_size_m: _Optional[float] = ..., last_in_version: _Optional[bool] = ..., confidence: _Optional[bytes] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class WatchWorldRequest(_message.Message):
    __slots__ = ("world_id", "thumbnail_max_width", "include_anchors")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    thumbnail_max_width: int
    include_anchors: bool
    def __init__(self, world_id: _Optional[str] = ..., thumbnail_max_width: _Optional[int] = ..., include_anchors: _Optional[bool] = ...) -> None: ...

class AnchorInfo(_message.Message):
    __slots__ = ("anchor_id", "frame_id", "pose", "intrinsics")
    ANCHOR_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    anchor_id: int
    frame_id: int
    pose: Pose
    intrinsics: Intrinsics
    def __init__(self, anchor_id: _Optional[int] = ..., frame_id: _Optional[int] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ...) -> None: ...

class WatchedFrame(_message.Message):
    __slots__ = ("frame_id", "pose", "intrinsics", "coverage", "thumbnail", "memory_thumbnail")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    pose: Pose
    intrinsics: Intrinsics
    coverage: float
    thumbnail: Image
    memory_thumbnail: Image
    def __init__(self, frame_id: _Optional[int] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., coverage: _Optional[float] = ..., thumbnail: _Optional[_Union[Image, _Mapping]] = ..., memory_thumbnail: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class WatchWorldResponse(_message.Message):
    __slots__ = ("version", "dropped", "frame", "timings_s", "anchors", "anchors_complete")
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_S_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    version: int
    dropped: int
    frame: WatchedFrame
    timings_s: _containers.ScalarMap[str, float]
    anchors: _containers.RepeatedCompositeFieldContainer[AnchorInfo]
    anchors_complete: bool
    def __init__(self, version: _Optional[int] = ..., dropped: _Optional[int] = ..., frame: _Optional[_Union[WatchedFrame, _Mapping]] = ..., timings_s: _Optional[_Mapping[str, float]] = ..., anchors: _Optional[_Iterable[_Union[AnchorInfo, _Mapping]]] = ..., anchors_complete: _Optional[bool] = ...) -> None: ...

class RaycastRequest(_message.Message):
    __slots__ = ("world_id", "origins_m", "directions", "max_range_m", "min_confidence", "return_normals")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINS_M_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_RANGE_M_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    RETURN_NORMALS_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    origins_m: bytes
    directions: bytes
    max_range_m: float
    min_confidence: float
    return_normals: bool
    def __init__(self, world_id: _Optional[str] = ..., origins_m: _Optional[bytes] = ..., directions: _Optional[bytes] = ..., max_range_m: _Optional[float] = ..., min_confidence: _Optional[float] = ..., return_normals: _Optional[bool] = ...) -> None: ...

class RaycastResponse(_message.Message):
    __slots__ = ("version", "hit", "distance_m", "points_m", "colors", "unknown", "normals")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    POINTS_M_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    NORMALS_FIELD_NUMBER: _ClassVar[int]
    version: int
    hit: bytes
    distance_m: bytes
    points_m: bytes
    colors: bytes
    unknown: bytes
    normals: bytes
    def __init__(self, version: _Optional[int] = ..., hit: _Optional[bytes] = ..., distance_m: _Optional[bytes] = ..., points_m: _Optional[bytes] = ..., colors: _Optional[bytes] = ..., unknown: _Optional[bytes] = ..., normals: _Optional[bytes] = ...) -> None: ...

class LidarSpec(_message.Message):
    __slots__ = ("channels", "range_m", "points_per_scan", "points_per_second", "rotation_frequency_hz", "upper_fov_deg", "lower_fov_deg", "horizontal_fov_deg")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    RANGE_M_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_SCAN_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FREQUENCY_HZ_FIELD_NUMBER: _ClassVar[int]
    UPPER_FOV_DEG_FIELD_NUMBER: _ClassVar[int]
    LOWER_FOV_DEG_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_FOV_DEG_FIELD_NUMBER: _ClassVar[int]
    channels: int
    range_m: float
    points_per_scan: int
    points_per_second: float
    rotation_frequency_hz: float
    upper_fov_deg: float
    lower_fov_deg: float
    horizontal_fov_deg: float
    def __init__(self, channels: _Optional[int] = ..., range_m: _Optional[float] = ..., points_per_scan: _Optional[int] = ..., points_per_second: _Optional[float] = ..., rotation_frequency_hz: _Optional[float] = ..., upper_fov_deg: _Optional[float] = ..., lower_fov_deg: _Optional[float] = ..., horizontal_fov_deg: _Optional[float] = ...) -> None: ...

class ScanLidarRequest(_message.Message):
    __slots__ = ("world_id", "sensor_pose", "lidar", "min_confidence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    SENSOR_POSE_FIELD_NUMBER: _ClassVar[int]
    LIDAR_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    sensor_pose: Pose
    lidar: LidarSpec
    min_confidence: float
    def __init__(self, world_id: _Optional[str] = ..., sensor_pose: _Optional[_Union[Pose, _Mapping]] = ..., lidar: _Optional[_Union[LidarSpec, _Mapping]] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class ScanLidarResponse(_message.Message):
    __slots__ = ("version", "points_per_channel", "points_m", "range_m", "intensity", "ring", "hit", "unknown")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    POINTS_M_FIELD_NUMBER: _ClassVar[int]
    RANGE_M_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    version: int
    points_per_channel: int
    points_m: bytes
    range_m: bytes
    intensity: bytes
    ring: bytes
    hit: bytes
    unknown: bytes
    def __init__(self, version: _Optional[int] = ..., points_per_channel: _Optional[int] = ..., points_m: _Optional[bytes] = ..., range_m: _Optional[bytes] = ..., intensity: _Optional[bytes] = ..., ring: _Optional[bytes] = ..., hit: _Optional[bytes] = ..., unknown: _Optional[bytes] = ...) -> None: ...

class NearestSurfaceRequest(_message.Message):
    __slots__ = ("world_id", "points_m", "max_range_m", "min_confidence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_M_FIELD_NUMBER: _ClassVar[int]
    MAX_RANGE_M_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    points_m: bytes
    max_range_m: float
    min_confidence: float
    def __init__(self, world_id: _Optional[str] = ..., points_m: _Optional[bytes] = ..., max_range_m: _Optional[float] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class NearestSurfaceResponse(_message.Message):
    __slots__ = ("version", "found", "distance_m", "surface_points_m")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    SURFACE_POINTS_M_FIELD_NUMBER: _ClassVar[int]
    version: int
    found: bytes
    distance_m: bytes
    surface_points_m: bytes
    def __init__(self, version: _Optional[int] = ..., found: _Optional[bytes] = ..., distance_m: _Optional[bytes] = ..., surface_points_m: _Optional[bytes] = ...) -> None: ...

class SphereBatch(_message.Message):
    __slots__ = ("centers_m", "radii_m")
    CENTERS_M_FIELD_NUMBER: _ClassVar[int]
    RADII_M_FIELD_NUMBER: _ClassVar[int]
    centers_m: bytes
    radii_m: bytes
    def __init__(self, centers_m: _Optional[bytes] = ..., radii_m: _Optional[bytes] = ...) -> None: ...

class CapsuleBatch(_message.Message):
    __slots__ = ("starts_m", "ends_m", "radii_m")
    STARTS_M_FIELD_NUMBER: _ClassVar[int]
    ENDS_M_FIELD_NUMBER: _ClassVar[int]
    RADII_M_FIELD_NUMBER: _ClassVar[int]
    starts_m: bytes
    ends_m: bytes
    radii_m: bytes
    def __init__(self, starts_m: _Optional[bytes] = ..., ends_m: _Optional[bytes] = ..., radii_m: _Optional[bytes] = ...) -> None: ...

class OrientedBoxBatch(_message.Message):
    __slots__ = ("centers_m", "half_extents_m", "rotations_wxyz")
    CENTERS_M_FIELD_NUMBER: _ClassVar[int]
    HALF_EXTENTS_M_FIELD_NUMBER: _ClassVar[int]
    ROTATIONS_WXYZ_FIELD_NUMBER: _ClassVar[int]
    centers_m: bytes
    half_extents_m: bytes
    rotations_wxyz: bytes
    def __init__(self, centers_m: _Optional[bytes] = ..., half_extents_m: _Optional[bytes] = ..., rotations_wxyz: _Optional[bytes] = ...) -> None: ...

class CheckCollisionRequest(_message.Message):
    __slots__ = ("world_id", "spheres", "capsules", "boxes", "min_confidence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    SPHERES_FIELD_NUMBER: _ClassVar[int]
    CAPSULES_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    spheres: SphereBatch
    capsules: CapsuleBatch
    boxes: OrientedBoxBatch
    min_confidence: float
    def __init__(self, world_id: _Optional[str] = ..., spheres: _Optional[_Union[SphereBatch, _Mapping]] = ..., capsules: _Optional[_Union[CapsuleBatch, _Mapping]] = ..., boxes: _Optional[_Union[OrientedBoxBatch, _Mapping]] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class CheckCollisionResponse(_message.Message):
    __slots__ = ("version", "hit", "clearance_m", "contact_points_m", "unknown")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    CLEARANCE_M_FIELD_NUMBER: _ClassVar[int]
    CONTACT_POINTS_M_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    version: int
    hit: bytes
    clearance_m: bytes
    contact_points_m: bytes
    unknown: bytes
    def __init__(self, version: _Optional[int] = ..., hit: _Optional[bytes] = ..., clearance_m: _Optional[bytes] = ..., contact_points_m: _Optional[bytes] = ..., unknown: _Optional[bytes] = ...) -> None: ...

class QueryOccupancyRequest(_message.Message):
    __slots__ = ("world_id", "points_m", "min_confidence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_M_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    points_m: bytes
    min_confidence: float
    def __init__(self, world_id: _Optional[str] = ..., points_m: _Optional[bytes] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class QueryOccupancyResponse(_message.Message):
    __slots__ = ("version", "states")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    version: int
    states: bytes
    def __init__(self, version: _Optional[int] = ..., states: _Optional[bytes] = ...) -> None: ...

class CropPointCloudRequest(_message.Message):
    __slots__ = ("world_id", "box", "max_chunk_bytes", "min_confidence")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    box: Box
    max_chunk_bytes: int
    min_confidence: float
    def __init__(self, world_id: _Optional[str] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., max_chunk_bytes: _Optional[int] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class CropPointCloudResponse(_message.Message):
    __slots__ = ("version", "count", "points_m", "colors", "last", "confidence")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    POINTS_M_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    version: int
    count: int
    points_m: bytes
    colors: bytes
    last: bool
    confidence: bytes
    def __init__(self, version: _Optional[int] = ..., count: _Optional[int] = ..., points_m: _Optional[bytes] = ..., colors: _Optional[bytes] = ..., last: _Optional[bool] = ..., confidence: _Optional[bytes] = ...) -> None: ...

class RemoveRegionRequest(_message.Message):
    __slots__ = ("world_id", "region")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    region: Region
    def __init__(self, world_id: _Optional[str] = ..., region: _Optional[_Union[Region, _Mapping]] = ...) -> None: ...

class RemoveRegionResponse(_message.Message):
    __slots__ = ("version", "voxels_removed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VOXELS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    version: int
    voxels_removed: int
    def __init__(self, version: _Optional[int] = ..., voxels_removed: _Optional[int] = ...) -> None: ...

class RecolorRegionRequest(_message.Message):
    __slots__ = ("world_id", "region", "rgb")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    region: Region
    rgb: bytes
    def __init__(self, world_id: _Optional[str] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., rgb: _Optional[bytes] = ...) -> None: ...

class RecolorRegionResponse(_message.Message):
    __slots__ = ("version", "voxels_changed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VOXELS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    version: int
    voxels_changed: int
    def __init__(self, version: _Optional[int] = ..., voxels_changed: _Optional[int] = ...) -> None: ...

class InsertPointsRequest(_message.Message):
    __slots__ = ("world_id", "points_m", "colors", "semantic_class", "instance_id")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_M_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_CLASS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    points_m: bytes
    colors: bytes
    semantic_class: int
    instance_id: int
    def __init__(self, world_id: _Optional[str] = ..., points_m: _Optional[bytes] = ..., colors: _Optional[bytes] = ..., semantic_class: _Optional[int] = ..., instance_id: _Optional[int] = ...) -> None: ...

class InsertPointsResponse(_message.Message):
    __slots__ = ("version", "voxels_added")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VOXELS_ADDED_FIELD_NUMBER: _ClassVar[int]
    version: int
    voxels_added: int
    def __init__(self, version: _Optional[int] = ..., voxels_added: _Optional[int] = ...) -> None: ...

class LabelRegionRequest(_message.Message):
    __slots__ = ("world_id", "region", "semantic_class", "instance_id")
    WORLD_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_CLASS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    world_id: str
    region: Region
    semantic_class: int
    instance_id: int
    def __init__(self, world_id: _Optional[str] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., semantic_class: _Optional[int] = ..., instance_id: _Optional[int] = ...) -> None: ...

class LabelRegionResponse(_message.Message):
    __slots__ = ("version", "voxels_changed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VOXELS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    version: int
    voxels_changed: int
    def __init__(self, version: _Optional[int] = ..., voxels_changed: _Optional[int] = ...) -> None: ...
