"""The global voxel map: the world's colored point cloud, versioned and editable.

Each voxel (hashed by its packed integer coordinates, see ``voxel_keys``) holds a colour (weighted running mean,
weight capped at ``max_weight`` so memory stays updatable), a weight, a confidence in [0, 1], a source (seed /
generated / inserted) and the first and last frame that saw it. A frame's pixels weigh their confidence
(``RGBDFrame.confidence``): a confidence-0 pixel never enters the map, a half-confidence one weighs half as much in
the running means as a full one, and a voxel's confidence is the weight-averaged confidence of what was fused into it (seed frames and
inserted points count 1; an insert sets its voxels to 1). Each voxel also keeps a **surface point**: the weighted mean
of the points fused into it (``surface_at``), a sub-voxel position of the surface that the LiDAR uses. A voxel may
carry a semantic class (uint16) and an instance id (uint32), 0 meaning unlabelled; the fusion rule and the sources of
labels are in ``bridge.memory.labels``. Every integrate or edit bumps ``version`` and logs the keys
it added, changed or removed, so ``changes_since(v)`` can answer exactly within the retention window.

Columns live in torch tensors on ``device``; on CPU the key index is a numba hash table by default, elsewhere a
sorted-key torch index (``voxel_index``). All coordinates are world metres.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch

from worldweave.bridge.cores import threads_for
from worldweave.bridge.frames import RGBDFrame, check_mask
from worldweave.bridge.memory import hash_table, labels, voxel_keys
from worldweave.bridge.memory.change_log import ChangeLog, NetChanges
from worldweave.bridge.memory.key_order import PackedVoxels, pack_voxels
from worldweave.bridge.memory.voxel_index import (
    Accumulation,
    HashIndex,
    IndexBackend,
    fold_into_columns,
    make_index,
)
from worldweave.bridge.regions import Region
from worldweave.bridge.storage import (
    atomic_folder,
    load_array,
    read_manifest,
    resolve_folder,
    save_array,
    write_manifest,
    write_ply,
)
from worldweave.proto.errors import InvalidInputError, StorageError

FORMAT_VERSION = 3
"""Saved-map layout: 2 added the per-voxel ``confidence`` array, 3 the surface point (``surface_offset_m``,
``surface_weight``)."""
READABLE_FORMATS = (1, 2, FORMAT_VERSION)
"""Layouts ``read`` accepts; a format-1 map (saved before confidence) loads with confidence 1 for every voxel, a map
saved before format 3 with no surface point (``surface_at`` answers the voxel centre until a frame sees the voxel).
Labels (``semantic``, ``instance``) are optional arrays of any format: written only when some voxel is labelled, and a
map without them loads unlabelled, so a save without labels is the same as before labels existed."""
MAX_INTEGRATE_THREADS = 4
"""The most threads ``integrate_threads=None`` gives one frame. Each band of rows after the first defers the pixels of
voxels it shares with the band above to a serial pass, so thin bands gain little; measured only up to 2 threads."""
MIN_VOXEL_SIZE_M = 0.005
DEFAULT_CONFIDENCE_LEVELS = (0.0, 0.5)
"""The minimum-confidence levels a world's queries accept unless it declares others: 0 (everything fused) and 0.5."""
PREFERRED_MIN_CONFIDENCE = 0.5
"""The default query level when it is declared (else the highest declared level): at least half sure."""
MAX_CONFIDENCE_LEVELS = 4
"""Most levels a world may declare: its spatial queries keep a surface copy and distance field per level."""
NO_FRAME = -1
"""``first_frame`` / ``last_frame`` of voxels that no frame has seen (inserted points)."""


def check_confidence_levels(levels, default: float | None = None) -> tuple[tuple[float, ...], float]:
    """Validated minimum-confidence levels, sorted ascending, and the default level among them: ``levels`` are 1 to
    ``MAX_CONFIDENCE_LEVELS`` distinct numbers in [0, 1]; ``default`` one of them (``None``: 0.5 when declared, else
    the highest). A voxel is at or above a level when ``confidence >= np.float32(level)`` (both in float32)."""
    try:
        values = sorted(float(level) for level in levels)
    except (TypeError, ValueError):
        raise InvalidInputError(f"confidence_levels must be numbers in [0, 1], got {levels!r}") from None
    if not 1 <= len(values) <= MAX_CONFIDENCE_LEVELS:
        raise InvalidInputError(f"confidence_levels must hold 1 to {MAX_CONFIDENCE_LEVELS} levels, got {len(values)}")
    if any(not 0.0 <= level <= 1.0 for level in values) or len(set(values)) != len(values):
        raise InvalidInputError(f"confidence_levels must be distinct numbers in [0, 1], got {list(levels)!r}")
    if default is None:
        return tuple(values), (PREFERRED_MIN_CONFIDENCE if PREFERRED_MIN_CONFIDENCE in values else values[-1])
    chosen = [level for level in values if abs(level - float(default)) <= 1e-6]
    if not chosen:
        raise InvalidInputError(f"default_min_confidence {default!r} is not one of the confidence_levels {values}")
    return tuple(values), chosen[0]


class Source(IntEnum):
    """Where a voxel's content came from."""

    SEED = 0
    GENERATED = 1
    INSERTED = 2


@dataclass(frozen=True)
class VoxelSet:
    """Voxels as columns (numpy, CPU), all of length N.

    ``keys`` int64 packed voxel coordinates; ``positions_m`` float32 (N, 3) voxel centres, world metres;
    ``colors`` uint8 (N, 3) RGB; ``weights`` float32; ``sources`` uint8 (``Source``); ``first_frame`` and
    ``last_frame`` int32 frame ids (``NO_FRAME`` for inserted points); ``confidence`` float32 in [0, 1], the
    weight-averaged confidence of what was fused into each voxel (1 for seed frames and inserted points);
    ``semantic`` uint16 class and ``instance`` uint32 instance id, 0 = unlabelled.
    """

    keys: np.ndarray
    positions_m: np.ndarray
    colors: np.ndarray
    weights: np.ndarray
    sources: np.ndarray
    first_frame: np.ndarray
    last_frame: np.ndarray
    confidence: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def sorted_by_key(self) -> VoxelSet:
        order = np.argsort(self.keys, kind="stable")
        return VoxelSet(*(getattr(self, f)[order] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class VoxelChanges:
    """The difference between the map at ``since_version`` and at ``version``.

    With ``is_snapshot`` True, ``since_version`` was older than the retention window: ``added`` holds the whole
    map and the receiver must drop what it had; ``changed`` and ``removed_keys`` are empty. ``added`` and ``changed``
    hold each voxel's current values, its ``confidence`` included (a fused frame that moves a voxel's confidence
    lists it as changed).
    """

    since_version: int
    version: int
    is_snapshot: bool
    added: VoxelSet
    changed: VoxelSet
    removed_keys: np.ndarray


@dataclass(frozen=True)
class IntegrateStats:
    points: int
    """Valid depth pixels that entered memory (confidence > 0)."""
    voxels_touched: int
    voxels_added: int
    version: int
    points_out_of_range: int = 0
    """Valid depth pixels left out because their point lies beyond the map's extent (``voxel_keys.extent_m``)."""


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor of ``array``, sharing its memory; a read-only array (a frame decoded from the wire) is copied
    first, since torch cannot hold read-only memory."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class VoxelMap:
    """Hashed colored voxels with a change log, edits and atomic storage.

    ``voxel_size_m``: edge length, 0.005 m or more (default 2 cm). ``device``: where the columns live.
    ``backend``: key index, ``"numba"`` (CPU default) or ``"torch"`` (any device). ``retention_versions``: how many
    versions ``changes_since`` answers exactly. ``max_weight``: cap on a voxel's colour weight, so new
    observations keep moving the colour. ``integrate_threads``: threads one ``integrate`` runs on with the numba
    index (the same map, bit for bit, on any number); None, the default, takes the calling thread's core plus the
    cores no other engine work holds now (``bridge.cores.threads_for``, at most ``MAX_INTEGRATE_THREADS``): all of
    them for a world stepping alone, one for each of several worlds stepping at once.
    """

    _COLUMNS = ("_keys", "_colors", "_weights", "_confidence", "_sources", "_first", "_last", "_surface",
                "_surface_weight", "_semantic", "_instance")
    """The per-voxel columns, row i of each describing the voxel in row i (grown, compacted and hashed together)."""

    def __init__(
        self,
        voxel_size_m: float = 0.02,
        *,
        device: torch.device | str = "cpu",
        backend: IndexBackend | None = None,
        retention_versions: int = 256,
        max_weight: float = 255.0,
        integrate_threads: int | None = None,
    ) -> None:
        if not np.isfinite(voxel_size_m) or voxel_size_m < MIN_VOXEL_SIZE_M:
            raise InvalidInputError(f"voxel_size_m must be >= {MIN_VOXEL_SIZE_M} m, got {voxel_size_m!r}")
        self.voxel_size_m = float(voxel_size_m)
        self.device = torch.device(device)
        self.backend: IndexBackend = backend or ("numba" if self.device.type == "cpu" else "torch")
        self.max_weight = float(max_weight)
        if integrate_threads is not None and integrate_threads < 1:
            raise InvalidInputError(f"integrate_threads must be None or >= 1, got {integrate_threads!r}")
        self.integrate_threads = None if integrate_threads is None else int(integrate_threads)
        self.version = 0
        self._index = make_index(self.backend, self.device)
        self._log = ChangeLog(retention_versions)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        """Inside ``one_version``: the (added, changed, removed) keys of each change made there, not yet logged."""
        self._count = 0
        self._keys = torch.empty(0, dtype=torch.int64, device=self.device)
        self._colors = torch.empty((0, 3), dtype=torch.float32, device=self.device)
        self._weights = torch.empty(0, dtype=torch.float32, device=self.device)
        self._confidence = torch.empty(0, dtype=torch.float32, device=self.device)
        self._sources = torch.empty(0, dtype=torch.uint8, device=self.device)
        self._first = torch.empty(0, dtype=torch.int32, device=self.device)
        self._last = torch.empty(0, dtype=torch.int32, device=self.device)
        self._surface = torch.empty((0, 3), dtype=torch.float32, device=self.device)
        """Per voxel: the weighted mean of the points fused into it, metres from the voxel centre."""
        self._surface_weight = torch.empty(0, dtype=torch.float32, device=self.device)
        """Per voxel: the weight of ``_surface`` (sum of point confidences, capped at ``max_weight``; 0: none)."""
        self._semantic = torch.empty(0, dtype=torch.int32, device=self.device)
        """Per voxel: semantic class 0..65535 (0: unlabelled), int32 (torch has no general uint16)."""
        self._instance = torch.empty(0, dtype=torch.int64, device=self.device)
        """Per voxel: instance id 0..2**32-1 (0: none), int64 (torch has no general uint32)."""

    def __len__(self) -> int:
        return self._count

    def columns(self) -> dict[str, torch.Tensor]:
        """Every per-voxel column cut to the live rows, by attribute name (views, on ``device``): what the map holds
        beside its key index (for hashing a world's memory)."""
        return {name: getattr(self, name)[: self._count] for name in self._COLUMNS}

    def __repr__(self) -> str:
        return (
            f"VoxelMap({self._count} voxels, voxel_size_m={self.voxel_size_m}, version={self.version}, "
            f"device={self.device}, backend={self.backend!r})"
        )

    # ----------------------------------------------------------------------------------------------- storage

    def _reserve(self, extra: int) -> None:
        needed = self._count + extra
        if needed <= len(self._keys):
            return
        capacity = max(needed, int(len(self._keys) * 1.5), 1 << 14)

        def grow(column: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((capacity, *column.shape[1:]), dtype=column.dtype, device=self.device)
            out[: self._count] = column[: self._count]
            return out

        for name in self._COLUMNS:
            setattr(self, name, grow(getattr(self, name)))

    def _bump(self, added: torch.Tensor, changed: torch.Tensor, removed: torch.Tensor) -> int:
        keys = tuple(k.cpu().numpy() for k in (added, changed, removed))
        if self._pending is not None:
            self._pending.append(keys)
            return self.version + 1
        self.version += 1
        self._log.record(self.version, *keys)
        return self.version

    @contextmanager
    def one_version(self) -> Iterator[None]:
        """Make every change inside the ``with`` block one version: on leaving it (also by an exception, since the
        columns did change), ``version`` rises by 1 if anything changed, and the change log holds one entry with the
        block's net added, changed and removed keys. Used to fuse the frames of a rig's cameras as one update. Inside,
        ``version`` stays where it was and each change reports the version the block will end at. Not reentrant."""
        if self._pending is not None:
            raise RuntimeError("VoxelMap.one_version blocks do not nest")
        self._pending = []
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            if len(pending) == 1:  # one change: its keys are its net change already (each key once)
                self.version += 1
                self._log.record(self.version, *pending[0])
            elif pending:
                folded = ChangeLog(len(pending), max_keys=sum(len(k) for keys in pending for k in keys) + 1)
                for i, keys in enumerate(pending, start=1):
                    folded.record(i, *keys)
                net = folded.net_since(0)
                self.version += 1
                self._log.record(self.version, net.added, net.changed, net.removed)

    def _accumulate_points(
        self, points_world: torch.Tensor, colors: torch.Tensor, confidence: torch.Tensor | None = None
    ) -> Accumulation:
        """Sum per-voxel confidence-weighted colours of world points (metres) with float RGB, assigning rows to new
        voxels. ``confidence``: (P,) float32 in (0, 1] per point; ``None`` weighs every point 1."""
        keys, inside = voxel_keys.point_keys(points_world, self.voxel_size_m)
        assignment = self._index.assign(keys, self._count)
        rows = assignment.rows.to(self.device)
        inverse = assignment.inverse.to(self.device)
        if confidence is None:
            confidence = torch.ones(len(keys), dtype=torch.float32, device=self.device)
        else:
            confidence = confidence[inside]

        def per_voxel(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros((len(rows), *values.shape[1:]), dtype=torch.float32, device=self.device).index_add_(
                0, inverse, values
            )

        return Accumulation(
            rows=rows, color_sums=per_voxel(colors[inside] * confidence[:, None]), weights=per_voxel(confidence),
            confidence_sums=per_voxel(confidence * confidence), new_keys=assignment.new_keys.to(self.device),
            points=len(keys), points_out_of_range=int((~inside).sum()),
        )

    def _apply(
        self, acc: Accumulation, source: Source, frame_id: int, threads: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold an accumulation into the columns (the numba index's fold on ``threads`` threads); return (new keys,
        keys of existing voxels touched)."""
        if isinstance(self._index, HashIndex):
            changed_keys = fold_into_columns(
                self._keys.numpy(), self._colors.numpy(), self._weights.numpy(), self._confidence.numpy(),
                self._sources.numpy(), self._first.numpy(), self._last.numpy(), acc.rows.numpy(),
                acc.color_sums.numpy(), acc.weights.numpy(), acc.confidence_sums.numpy(), acc.new_keys.numpy(),
                self._count, int(source), source == Source.INSERTED, frame_id, self.max_weight, threads,
            )
            self._count += len(acc.new_keys)
            return acc.new_keys, torch.from_numpy(changed_keys)
        rows = acc.rows.to(self.device)
        n_new = len(acc.new_keys)
        is_new = rows >= self._count
        self._keys[self._count : self._count + n_new] = acc.new_keys.to(self.device)
        new_rows = rows[is_new]
        self._sources[new_rows] = int(source)
        self._first[new_rows] = frame_id
        self._weights[new_rows] = 0.0
        self._confidence[new_rows] = 0.0
        self._colors[new_rows] = 0.0
        old_weight = self._weights[rows]
        total = old_weight + acc.weights.to(self.device)
        self._colors[rows] = (self._colors[rows] * old_weight[:, None] + acc.color_sums.to(self.device)) / total[:, None]
        if source == Source.INSERTED:
            self._sources[rows] = int(Source.INSERTED)
            self._confidence[rows] = 1.0
        else:
            self._confidence[rows] = (self._confidence[rows] * old_weight + acc.confidence_sums.to(self.device)) / total
        self._weights[rows] = total.clamp_max(self.max_weight)
        self._last[rows] = frame_id
        self._count += n_new
        return acc.new_keys.to(self.device), self._keys[rows[~is_new]]

    # --------------------------------------------------------------------------------------------- integrate

    def _backproject(
        self, frame: RGBDFrame, exclude: np.ndarray, max_depth_m: float, exclude_regions: Sequence[Region]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """World points (float64 metres), float RGB, confidence (``None`` when the frame has none) and flat pixel
        indices (int64, row-major) of the frame's valid pixels: depth in (0, max_depth_m], not excluded, confidence > 0
        (same maths as the fused kernel)."""
        depth = _tensor(frame.depth).to(self.device, torch.float64)
        valid = (depth > 0) & (depth <= max_depth_m) & ~torch.from_numpy(exclude).to(self.device)
        confidence = None
        if frame.confidence is not None:
            confidence = _tensor(frame.confidence).to(self.device)
            valid &= confidence > 0
            confidence = confidence[valid]
        rays = torch.from_numpy(frame.intrinsics.pixel_rays(np.float64)).to(self.device)[valid]
        d = depth[valid]
        x, y = rays[:, 0] * d, rays[:, 1] * d
        r = frame.pose.rotation
        t = frame.pose.position
        points = torch.stack(
            [r[i, 0] * x + r[i, 1] * y + r[i, 2] * d + t[i] for i in range(3)], dim=1
        )
        colors = _tensor(frame.rgb).to(self.device)[valid].to(torch.float32)
        pixels = torch.nonzero(valid.reshape(-1)).flatten()
        for region in exclude_regions:
            keep = ~region.contains(points)
            points, colors, pixels = points[keep], colors[keep], pixels[keep]
            confidence = None if confidence is None else confidence[keep]
        return points, colors, confidence, pixels

    def integrate(
        self,
        frame: RGBDFrame,
        *,
        frame_id: int,
        source: Source = Source.GENERATED,
        exclude_mask: np.ndarray | None = None,
        exclude_regions: Sequence[Region] = (),
        max_depth_m: float | None = None,
    ) -> IntegrateStats:
        """Back-project the frame's valid depth to world points and merge them into the map, each pixel weighted
        by ``frame.confidence`` (confidence-0 pixels never enter; ``None`` weighs every pixel 1).

        ``exclude_mask``: bool (H, W), True on dynamic pixels, which never enter memory. ``exclude_regions``:
        world regions (dynamic 3D boxes) whose points never enter memory. ``max_depth_m``: ignore depth beyond.
        A frame with label images (``frame.semantic`` / ``frame.instance``) labels the voxels its labelled pixels land
        in (``labels.fold``). Bumps ``version`` even when nothing was added, so a frame always has its own version.
        A camera centre beyond
        the map's extent is ``InvalidInputError`` (nothing changes); pixels whose points lie beyond it are left out
        and counted (``IntegrateStats.points_out_of_range``).
        """
        voxel_keys.check_extent(frame.pose.position, self.voxel_size_m, "frame pose position")
        intrinsics = frame.intrinsics
        exclude = np.zeros(intrinsics.shape, bool) if exclude_mask is None else check_mask(exclude_mask, intrinsics.shape, "exclude_mask")
        max_depth = np.inf if max_depth_m is None else float(max_depth_m)
        if frame.confidence is not None and not frame.confidence.any():  # all guesses: no pixel can enter
            nothing = torch.zeros(0, dtype=torch.int64)
            return IntegrateStats(0, 0, 0, self._bump(nothing, nothing, nothing))
        self._reserve(frame.depth.size)
        first_new_row = self._count
        if isinstance(self._index, HashIndex) and not exclude_regions:
            with threads_for(self.integrate_threads, MAX_INTEGRATE_THREADS) as threads:
                acc = self._index.fuse_frame(
                    frame.depth, frame.rgb, exclude, frame.confidence,
                    (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy),
                    frame.pose.rotation, frame.pose.position, self.voxel_size_m, max_depth, self._count,
                    self._surface.numpy(), self._surface_weight.numpy(), self.max_weight, threads,
                )
                added, changed = self._apply(acc, source, frame_id, threads)
            self._clear_labels(first_new_row)
            if frame.semantic is not None or frame.instance is not None:
                points, _, confidence, pixels = self._backproject(frame, exclude, max_depth, exclude_regions)
                self._fold_frame_labels(frame, points, confidence, pixels)
        else:
            points, colors, confidence, pixels = self._backproject(frame, exclude, max_depth, exclude_regions)
            acc = self._accumulate_points(points, colors, confidence)
            added, changed = self._apply(acc, source, frame_id)
            self._fold_surface(points, confidence, first_new_row)
            self._clear_labels(first_new_row)
            self._fold_frame_labels(frame, points, confidence, pixels)
        version = self._bump(added, changed, added[:0])
        return IntegrateStats(acc.points, len(added) + len(changed), len(added), version, acc.points_out_of_range)

    def _clear_labels(self, first_new_row: int) -> None:
        """Unlabel the voxels a merge created (rows from ``first_new_row`` on may hold a removed voxel's labels)."""
        self._semantic[first_new_row : self._count] = 0
        self._instance[first_new_row : self._count] = 0

    def _fold_frame_labels(
        self, frame: RGBDFrame, points_world: torch.Tensor, confidence: torch.Tensor | None, pixels: torch.Tensor
    ) -> None:
        """Fold the frame's label images at its fused pixels (``pixels``, flat indices, with their world points and
        confidence, already merged) into their voxels (``labels.fold``)."""
        for image, column in ((frame.semantic, self._semantic), (frame.instance, self._instance)):
            if image is None:
                continue
            values = torch.from_numpy(image.reshape(-1).astype(np.int64)).to(self.device)[pixels]
            labelled = values > 0
            keys, inside = voxel_keys.point_keys(points_world[labelled], self.voxel_size_m)
            rows = self._index.lookup(keys).to(self.device)
            weight = None if confidence is None else confidence[labelled][inside]
            labels.fold(column, rows, values[labelled][inside], weight)

    def _fold_surface(self, points_world: torch.Tensor, confidence: torch.Tensor | None, first_new_row: int) -> None:
        """Fold points (world metres, already merged into the map) into their voxels' surface points, each weighing
        its ``confidence`` (``None``: 1), the running mean capped at ``max_weight`` like colour. Rows from
        ``first_new_row`` on are voxels this merge created (their old surface point, if any, is stale)."""
        keys, inside = voxel_keys.point_keys(points_world, self.voxel_size_m)
        if len(keys) == 0:
            return
        rows = self._index.lookup(keys).to(self.device)
        weight = torch.ones(len(keys), dtype=torch.float32, device=self.device) if confidence is None else confidence[inside]
        offsets = (points_world[inside] - voxel_keys.key_centers(keys, self.voxel_size_m).to(points_world.dtype)).float()
        unique_rows, inverse = torch.unique(rows, return_inverse=True)
        sums = torch.zeros((len(unique_rows), 3), dtype=torch.float32, device=self.device).index_add_(
            0, inverse, offsets * weight[:, None]
        )
        gained = torch.zeros(len(unique_rows), dtype=torch.float32, device=self.device).index_add_(0, inverse, weight)
        old = torch.where(unique_rows >= first_new_row, 0.0, self._surface_weight[unique_rows])
        total = old + gained
        self._surface[unique_rows] = (self._surface[unique_rows] * old[:, None] + sums) / total[:, None]
        self._surface_weight[unique_rows] = total.clamp_max(self.max_weight)

    # ------------------------------------------------------------------------------------------------- edits

    def _rows_in(self, region: Region) -> torch.Tensor:
        """Rows of the voxels whose centres lie in ``region``; a region wholly beyond the map's extent, which can
        hold no voxel, is ``InvalidInputError`` naming its bounds."""
        lo, hi = region.bounds()
        extent = voxel_keys.extent_m(self.voxel_size_m)
        if np.any(lo > extent) or np.any(hi < -extent):
            raise InvalidInputError(
                f"region bounds {lo.tolist()}..{hi.tolist()} m lie outside the map's extent (+-{extent:.0f} m per axis "
                f"at {self.voxel_size_m} m voxels)"
            )
        centers = voxel_keys.key_centers(self._keys[: self._count], self.voxel_size_m)
        return torch.nonzero(region.contains(centers), as_tuple=False).flatten()

    def remove(self, region: Region) -> int:
        """Delete every voxel whose centre lies in ``region``; return how many. Bumps ``version``."""
        rows = self._rows_in(region)
        removed = self._keys[rows].clone()
        if len(rows):
            keep = torch.ones(self._count, dtype=torch.bool, device=self.device)
            keep[rows] = False
            kept = torch.nonzero(keep).squeeze(1)  # once for every column: a mask per column took 3x as long
            n = len(kept)
            for name in self._COLUMNS:
                column = getattr(self, name)
                column[:n] = column.index_select(0, kept)
            self._count = n
            self._index.rebuild(self._keys[:n])
        self._bump(removed[:0], removed[:0], removed)
        return len(removed)

    def recolor(self, region: Region, rgb: Sequence[int]) -> int:
        """Set the colour of every voxel whose centre lies in ``region``; return how many. Bumps ``version``."""
        color = np.asarray(rgb)
        if color.shape != (3,) or not np.all((color >= 0) & (color <= 255)):
            raise InvalidInputError(f"recolor needs an RGB triple in 0..255, got {rgb!r}")
        rows = self._rows_in(region)
        self._colors[rows] = torch.as_tensor(color, dtype=torch.float32, device=self.device)
        self._bump(rows[:0], self._keys[rows], rows[:0])
        return len(rows)

    def insert(
        self, points_m: np.ndarray, colors: np.ndarray, *, frame_id: int = NO_FRAME, semantic_class: int = 0,
        instance_id: int = 0,
    ) -> int:
        """Add points (world metres, uint8 RGB) as ``Source.INSERTED`` voxels; return voxels touched. A point beyond
        the map's extent is ``InvalidInputError`` naming it (nothing is inserted). ``semantic_class`` /
        ``instance_id``: non-zero labels every voxel the points touch with it; 0 leaves those voxels' labels (new
        voxels are unlabelled)."""
        semantic_class, instance_id = labels.check_ids(semantic_class, instance_id)
        points = np.asarray(points_m, dtype=np.float32)
        colors = np.asarray(colors)
        if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
            raise InvalidInputError(f"insert needs finite (N, 3) points, got shape {points.shape}")
        if colors.shape != points.shape or colors.dtype != np.uint8:
            raise InvalidInputError(f"insert needs uint8 (N, 3) colours matching the points, got {colors.dtype} {colors.shape}")
        voxel_keys.check_extent(points, self.voxel_size_m, "points_m")
        self._reserve(len(points))
        points_t = torch.from_numpy(points).to(self.device)
        acc = self._accumulate_points(points_t, torch.from_numpy(colors).to(self.device).float())
        first_new_row = self._count
        added, changed = self._apply(acc, Source.INSERTED, frame_id)
        self._fold_surface(points_t, None, first_new_row)
        self._clear_labels(first_new_row)
        if semantic_class or instance_id:
            rows = self._index.lookup(voxel_keys.point_keys(points_t, self.voxel_size_m)[0]).to(self.device)
            if semantic_class:
                self._semantic[rows] = semantic_class
            if instance_id:
                self._instance[rows] = instance_id
        self._bump(added, changed, added[:0])
        return len(added) + len(changed)

    def label(self, region: Region, semantic_class: int, instance_id: int) -> int:
        """Set the semantic class and instance id (0: unlabel) of every voxel whose centre lies in ``region``; return
        how many. Bumps ``version`` (the voxels are logged as changed)."""
        semantic_class, instance_id = labels.check_ids(semantic_class, instance_id)
        rows = self._rows_in(region)
        self._semantic[rows] = semantic_class
        self._instance[rows] = instance_id
        self._bump(rows[:0], self._keys[rows], rows[:0])
        return len(rows)

    # ---------------------------------------------------------------------------------------------- queries

    def _gather(self, rows: torch.Tensor) -> VoxelSet:
        keys = self._keys[rows]
        return VoxelSet(
            keys=keys.cpu().numpy(),
            positions_m=voxel_keys.key_centers(keys, self.voxel_size_m).cpu().numpy(),
            colors=self._colors[rows].round().clamp(0, 255).to(torch.uint8).cpu().numpy(),
            weights=self._weights[rows].cpu().numpy(),
            sources=self._sources[rows].cpu().numpy(),
            first_frame=self._first[rows].cpu().numpy(),
            last_frame=self._last[rows].cpu().numpy(),
            confidence=self._confidence[rows].cpu().numpy(),
            semantic=self._semantic[rows].cpu().numpy().astype(np.uint16),
            instance=self._instance[rows].cpu().numpy().astype(np.uint32),
        )

    def voxels(self) -> VoxelSet:
        """Every voxel, in internal row order (use ``sorted_by_key`` to compare maps)."""
        return self._gather(torch.arange(self._count, device=self.device))

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) float32 voxel centres in world metres and (N, 3) uint8 colours."""
        voxels = self.voxels()
        return voxels.positions_m, voxels.colors

    def packed(self, min_confidence: float = 0.0) -> PackedVoxels:
        """Every voxel's key, colour (rounded and clamped as ``voxels`` does), source and confidence, read once into
        new arrays in row order (``key_order.pack_voxels``): what a point-cloud snapshot copies out of the map, no
        gather by row and no voxel centres. ``min_confidence`` above 0: only the voxels at or above that level."""
        columns = [getattr(self, name)[: self._count].cpu().numpy() for name in ("_keys", "_colors", "_sources",
                                                                                "_confidence")]
        return pack_voxels(*columns, min_confidence=min_confidence)

    def crop(self, region: Region) -> VoxelSet:
        """The voxels whose centres lie in ``region``."""
        return self._gather(self._rows_in(region))

    def lookup(self, keys: np.ndarray) -> VoxelSet:
        """The voxels with these keys (absent keys are skipped)."""
        rows = self._index.lookup(torch.as_tensor(np.asarray(keys, dtype=np.int64))).to(self.device)
        return self._gather(rows[rows >= 0])

    def colors_at(self, keys: np.ndarray) -> np.ndarray:
        """(N, 3) uint8 colours of the voxels with these keys, in order; zeros for absent keys. Cheaper than
        ``lookup`` when only colour is needed (a raycast's hits)."""
        rows = self._index.lookup(torch.as_tensor(np.asarray(keys, dtype=np.int64))).to(self.device)
        colors = self._colors[rows.clamp_min(0)].round().clamp(0, 255).to(torch.uint8)
        colors[rows < 0] = 0
        return colors.cpu().numpy()

    def confidence_at(self, keys: np.ndarray) -> np.ndarray:
        """(N,) float32 confidences of the voxels with these keys, in order; NaN for absent keys (the spatial
        queries' per-level copies and their checks for voxels below a level)."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(len(keys), np.nan, dtype=np.float32)
        if len(keys) and self._count:
            rows = self._index.lookup(torch.as_tensor(keys)).to(self.device)
            present = rows >= 0
            out[present.cpu().numpy()] = self._confidence[rows[present]].cpu().numpy()
        return out

    def surface_at(self, keys: np.ndarray) -> np.ndarray:
        """(N, 3) float64 surface points (world metres) of the voxels with these keys, in order: the weighted mean
        of the points fused into each voxel, the voxel centre where none was recorded (maps saved before format 3);
        NaN for absent keys."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full((len(keys), 3), np.nan)
        if len(keys) and self._count:
            rows = self._index.lookup(torch.as_tensor(keys)).to(self.device)
            present = rows >= 0
            found = rows[present]
            centers = voxel_keys.key_centers(self._keys[found], self.voxel_size_m).double()
            offsets = torch.where(self._surface_weight[found, None] > 0, self._surface[found].double(), 0.0)
            out[present.cpu().numpy()] = (centers + offsets).cpu().numpy()
        return out

    def surface_table(self) -> tuple[np.ndarray, np.ndarray, np.uint64, np.ndarray, np.ndarray]:
        """For numba kernels that read surface points (``surface_at`` per voxel): a hash table of the keys (keys,
        rows, shift; ``hash_table.find``), the (N, 3) float32 offsets of the surface points from the voxel centres,
        metres, and their (N,) float32 weights (0: none recorded, use the centre). Views of the map's columns on CPU
        (valid until the next change); on another backend a table built for the call, and copies."""
        surface = self._surface[: self._count].cpu().numpy()
        weight = self._surface_weight[: self._count].cpu().numpy()
        if isinstance(self._index, HashIndex):
            return (*self._index.table(), surface, weight)
        keys = self._keys[: self._count].cpu().numpy()
        table_keys, table_rows, shift = hash_table.allocate(max(1 << 4, 1 << int(np.ceil(np.log2(2 * len(keys) + 1)))), np.int64)
        hash_table.insert_all(table_keys, table_rows, shift, np.ascontiguousarray(keys))
        return table_keys, table_rows, shift, surface, weight

    def points_tensor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Voxel centres (N, 3) float32 metres and colours (N, 3) uint8, as tensors on ``device`` (for rendering)."""
        keys = self._keys[: self._count]
        colors = self._colors[: self._count].round().clamp(0, 255).to(torch.uint8)
        return voxel_keys.key_centers(keys, self.voxel_size_m), colors

    def keys_tensor(self) -> torch.Tensor:
        """Voxel keys (N,) int64, in ``points_tensor``'s order, on ``device``."""
        return self._keys[: self._count]

    def label_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Voxel semantic classes (N,) int32 and instance ids (N,) int64 (0: unlabelled), in ``points_tensor``'s
        order, on ``device`` (for rendering label images)."""
        return self._semantic[: self._count], self._instance[: self._count]

    def confidence_tensor(self) -> torch.Tensor:
        """Voxel confidences (N,) float32 in [0, 1], in ``points_tensor``'s order, on ``device`` (for rendering)."""
        return self._confidence[: self._count]

    def changes_since(self, version: int) -> VoxelChanges:
        """Added, changed and removed voxels between ``version`` and now.

        A ``version`` older than the retention window is answered with a full snapshot (``is_snapshot``).
        Raises ``InvalidInputError`` for a version from the future or a negative one.
        """
        if version < 0 or version > self.version:
            raise InvalidInputError(f"version {version} is not in 0..{self.version} (the current version)")
        net = self._log.net_since(version)
        if net is None:
            empty = self._gather(torch.empty(0, dtype=torch.int64, device=self.device))
            return VoxelChanges(version, self.version, True, self.voxels(), empty, np.empty(0, np.int64))
        return VoxelChanges(version, self.version, False, self.lookup(net.added), self.lookup(net.changed), net.removed)

    def changed_keys_since(self, version: int) -> NetChanges | None:
        """Only the keys of ``changes_since(version)`` (added, changed, removed), without gathering the voxels: the
        cheap form for followers that track geometry (the spatial queries). ``None`` when ``version`` is older than
        the retention window: start again from ``voxels()``. Raises ``InvalidInputError`` like ``changes_since``.
        """
        if version < 0 or version > self.version:
            raise InvalidInputError(f"version {version} is not in 0..{self.version} (the current version)")
        return self._log.net_since(version)

    @property
    def change_log_keys(self) -> int:
        """Keys the change log holds for ``changes_since`` (9 bytes each), over its retained versions."""
        return self._log.total_keys

    @property
    def oldest_exact_version(self) -> int:
        """The oldest version ``changes_since`` answers without falling back to a snapshot."""
        return self._log.oldest_exact_version

    # ---------------------------------------------------------------------------------------------- storage

    def write(self, folder: Path) -> None:
        """Write the map into an existing empty folder (not atomic; ``save`` wraps it)."""
        voxels = self.voxels()
        for name in ("keys", "weights", "sources", "first_frame", "last_frame", "confidence"):
            save_array(folder, name, getattr(voxels, name))
        save_array(folder, "colors", self._colors[: self._count].cpu().numpy())
        save_array(folder, "surface_offset_m", self._surface[: self._count].cpu().numpy())
        save_array(folder, "surface_weight", self._surface_weight[: self._count].cpu().numpy())
        labelled = bool((self._semantic[: self._count] != 0).any() or (self._instance[: self._count] != 0).any())
        if labelled:  # optional arrays: a map without labels saves as before labels existed
            save_array(folder, "semantic", voxels.semantic)
            save_array(folder, "instance", voxels.instance)
        write_ply(folder / "cloud.ply", voxels.positions_m, voxels.colors)
        write_manifest(
            folder,
            {
                "kind": "voxel_map",
                "format_version": FORMAT_VERSION,
                "voxel_size_m": self.voxel_size_m,
                "version": self.version,
                "count": self._count,
                "max_weight": self.max_weight,
                "key_axis_bits": voxel_keys.AXIS_BITS,
                "files": {
                    "keys": "int64 packed voxel coordinates",
                    "colors": "float32 (N, 3) mean RGB 0..255",
                    "weights": "float32",
                    "sources": "uint8 (0 seed, 1 generated, 2 inserted)",
                    "first_frame": "int32",
                    "last_frame": "int32",
                    "confidence": "float32 in [0, 1], weight-averaged confidence of what was fused (format 2 on)",
                    "surface_offset_m": "float32 (N, 3) mean fused point, metres from the voxel centre (format 3 on)",
                    "surface_weight": "float32 weight of that mean, 0 = none recorded (format 3 on)",
                    "cloud.ply": "voxel centres (metres) with uint8 colours, for viewers",
                    **({"semantic": "uint16 semantic class, 0 = unlabelled (optional: absent = unlabelled)",
                        "instance": "uint32 instance id, 0 = none (optional: absent = unlabelled)"} if labelled else {}),
                },
            },
        )

    def save(self, folder: str | Path) -> Path:
        """Save atomically to ``folder`` (a crash mid-save leaves the previous save intact)."""
        with atomic_folder(folder) as tmp:
            self.write(tmp)
        return Path(folder)

    @classmethod
    def read(cls, folder: Path, *, device: torch.device | str = "cpu", backend: IndexBackend | None = None) -> VoxelMap:
        """Read a map written by ``write`` in any of ``READABLE_FORMATS`` (format 1: every voxel gets confidence 1);
        its change log starts empty at the saved version."""
        manifest = read_manifest(folder, "voxel_map", READABLE_FORMATS)
        vmap = cls(manifest["voxel_size_m"], device=device, backend=backend, max_weight=manifest["max_weight"])
        arrays = {name: load_array(folder, name) for name in ("keys", "colors", "weights", "sources", "first_frame", "last_frame")}
        n = len(arrays["keys"])
        if manifest["format_version"] == 1:
            arrays["confidence"] = np.ones(n, np.float32)
        else:
            arrays["confidence"] = load_array(folder, "confidence")
        if manifest["format_version"] < 3:
            arrays["surface_offset_m"] = np.zeros((n, 3), np.float32)
            arrays["surface_weight"] = np.zeros(n, np.float32)
        else:
            arrays["surface_offset_m"] = load_array(folder, "surface_offset_m").astype(np.float32)
            arrays["surface_weight"] = load_array(folder, "surface_weight").astype(np.float32)
        saved_files = manifest.get("files", {})
        for name, dtype in (("semantic", np.uint16), ("instance", np.uint32)):
            if name in saved_files:
                arrays[name] = load_array(folder, name)
                if arrays[name].dtype != dtype:
                    raise StorageError(f"saved map at {folder} has {name} of dtype {arrays[name].dtype}, not {np.dtype(dtype)}")
            else:
                arrays[name] = np.zeros(n, dtype)
        if n != manifest["count"] or any(len(a) != n for a in arrays.values()):
            raise StorageError(f"saved map at {folder} is inconsistent: manifest count {manifest['count']}, arrays {n}")
        confidence = arrays["confidence"]
        if confidence.dtype != np.float32 or not np.all((confidence >= 0) & (confidence <= 1)):
            raise StorageError(f"saved map at {folder} has confidence outside float32 [0, 1] (dtype {confidence.dtype})")
        vmap._reserve(n)
        vmap._keys[:n] = torch.from_numpy(arrays["keys"])
        vmap._colors[:n] = torch.from_numpy(arrays["colors"])
        vmap._weights[:n] = torch.from_numpy(arrays["weights"])
        vmap._confidence[:n] = torch.from_numpy(confidence)
        vmap._sources[:n] = torch.from_numpy(arrays["sources"])
        vmap._first[:n] = torch.from_numpy(arrays["first_frame"])
        vmap._last[:n] = torch.from_numpy(arrays["last_frame"])
        vmap._surface[:n] = torch.from_numpy(arrays["surface_offset_m"])
        vmap._surface_weight[:n] = torch.from_numpy(arrays["surface_weight"])
        vmap._semantic[:n] = torch.from_numpy(arrays["semantic"].astype(np.int32))
        vmap._instance[:n] = torch.from_numpy(arrays["instance"].astype(np.int64))
        vmap._count = n
        vmap._index.rebuild(vmap._keys[:n])
        vmap.version = int(manifest["version"])
        vmap._log.clear(vmap.version)
        return vmap

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str = "cpu", backend: IndexBackend | None = None) -> VoxelMap:
        """Load a map saved with ``save``."""
        return cls.read(resolve_folder(folder), device=device, backend=backend)
