"""``Viewer``: a browser viewer (viser) of a worldweave server's worlds, kept current from the point-cloud stream.

    with Viewer("127.0.0.1:50051", port=8080) as viewer:    # then open viewer.url in a browser
        ...

Each browser tab is a ``Session`` with its own world, scene and panel. The world's cloud is a ``PointCloudMirror``
fed by a following ``StreamPointCloud``; the drawn cloud is redrawn at most every ``DRAW_INTERVAL_S`` seconds and
thinned to ``max_points`` by a stable hash of the voxel keys (``scene.stable_subset``). "Render here" renders memory
at the browser's camera (Render RPC); "Step here" renders memory, then steps the world at that camera, and shows
the generated frame beside the render and the step's stage timings. Every step of the world, whoever makes it, comes
from its ``WatchWorld`` stream (``watch.watch_world``): the last ``RECENT_STEPS`` step cameras and the world's anchors
are drawn as frustums, and the latest frame, the memory render it was conditioned on and its stage timings are shown.
A world deleted while viewed leaves a message in the panel. gRPC runs on the viewer's own asyncio loop
(``AsyncWorldClient``); viser's callbacks hand their work to it.

Bound to another interface than loopback, the viewer needs the server's token (``ViewerSecurityError`` otherwise) and
asks every browser for it before showing anything: viser serves plain HTTP and has no login of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import ipaddress
import logging
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import viser
from viser import _messages as viser_messages

from worldweave.proto.errors import InvalidInputError, NotFoundError, WorldweaveError
from worldweave.proto.geometry import Intrinsics
from worldweave.sim_clients.aio_client import AsyncWorldClient
from worldweave.sim_clients.mirror import MirrorError, PointCloudMirror
from worldweave.sim_clients.viewer import scene
from worldweave.sim_clients.viewer.watch import StepEvent, watch_world

logger = logging.getLogger("worldweave.viewer")

DRAW_INTERVAL_S = 0.2
"""Shortest time between two redraws of a world's cloud, seconds (versions in between are folded)."""
WORLD_POLL_S = 1.0
"""How often the list of worlds is refreshed, seconds."""
RETRY_S = 2.0
"""Wait before following a world again after the stream failed (server restarting, network), seconds."""
AT_VIEW_WIDTH_PX = 320
"""Width of the images "Render here" and "Step here" ask for, pixels (height from the browser's aspect)."""
RECENT_STEPS = 10
"""How many step cameras (any client's steps) stay drawn as frustums."""
WATCH_THUMBNAIL_PX = 320
"""Width of the thumbnails of the latest step's frame and memory render that the viewer asks the server for, pixels."""
STEP_COLOR = (255, 153, 0)
"""RGB of a step camera's frustum (orange)."""
ANCHOR_COLOR = (66, 133, 244)
"""RGB of an anchor's frustum (blue)."""
NO_WORLD = "(none)"
"""The world dropdown's entry for "no world shown"."""


class ViewerSecurityError(InvalidInputError):
    """The viewer was asked to bind another interface than loopback without the server's token."""


def check_port(host: str, port: int) -> None:
    """``InvalidInputError`` naming ``host:port`` unless a TCP server can bind it now (port 0 always can)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the page's server does
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            raise InvalidInputError(
                f"cannot serve the viewer on {host}:{port}: {error.strerror}; pick another --port (0: any free one)"
            ) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Viewer:
    """A viser server on ``host:port`` showing the worlds of the worldweave server at ``target``; a context manager.

    ``token``: the server's bearer token (the viewer shows that token's tenant's worlds); required when ``host`` is
    not loopback, and then also asked of every browser. ``tls`` / ``tls_root_certificates``: as ``WorldClient``.
    ``port`` 0 picks a free port (``url`` says which); a busy port is ``InvalidInputError``. ``max_points``: most
    points drawn per world. ``world_id``: the world a new tab shows first (default: the first in the list). viser's
    share button (a public tunnel through viser's relay) is disabled.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool = False,
        tls_root_certificates: bytes | str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_points: int = scene.DEFAULT_MAX_POINTS,
        world_id: str | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ViewerSecurityError(
                f"refusing to serve the viewer on {host} without the server's token: anyone who reaches {host}:{port} "
                "would see the worlds; pass --token (every browser is then asked for it) or bind 127.0.0.1"
            )
        if max_points < 1:
            raise InvalidInputError(f"max_points must be >= 1, got {max_points}")
        self.target = target
        self.host, self.port = host, port
        self.max_points = max_points
        self.world_id = world_id
        self.browser_token = None if is_loopback(host) else token
        self._client_options: dict[str, Any] = {
            "token": token, "tls": tls, "tls_root_certificates": tls_root_certificates,
            "connect_timeout_s": connect_timeout_s,
        }
        self.client: AsyncWorldClient | None = None
        self.server: viser.ViserServer | None = None
        self.worlds: list[str] = []
        self._sessions: dict[int, Session] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="worldweave-viewer", daemon=True)
        self._poller: asyncio.Future | None = None

    @property
    def url(self) -> str:
        """The page to open, ``http://host:port`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def submit(self, coroutine: Coroutine) -> asyncio.Future:
        """Run ``coroutine`` on the viewer's loop (from any thread); errors are logged."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        future.add_done_callback(_log_failure)
        return future

    def start(self) -> Viewer:
        """Connect to the server, bind the page, start following; returns self. Raises the client's
        ``WorldweaveError`` when the server is unreachable, ``InvalidInputError`` when the port is busy."""
        self._thread.start()
        try:
            self.client = asyncio.run_coroutine_threadsafe(
                AsyncWorldClient.connect(self.target, **self._client_options), self._loop
            ).result()
            check_port(self.host, self.port)  # viser would move on to the next free port; a user asked for this one
            with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner of its own
                self.server = viser.ViserServer(host=self.host, port=self.port, label="worldweave", verbose=False)
        except BaseException:
            self.close()
            raise
        self.port = self.server.get_port()
        # viser's share button opens a public tunnel to its relay on the internet: never for a world's viewer. Hide it
        # and drop the request, which any websocket client could send.
        self.server.gui.configure_theme(show_share_button=False)
        self.server._websock_server.unregister_handler(viser_messages.ShareUrlRequest)
        self.server.scene.set_up_direction("+z")
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self._poller = self.submit(self._poll_worlds())
        logger.info("worldweave viewer on %s, showing %s", self.url, self.target)
        return self

    def close(self) -> None:
        """Stop following, close the page and the connection."""
        if self._poller is not None:
            self._poller.cancel()
        if self._loop.is_running():
            for session in list(self._sessions.values()):
                session.close()
        if self.server is not None:
            self.server.stop()
        if self.client is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result(timeout=5)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> Viewer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- browsers

    def _connect(self, handle: viser.ClientHandle) -> None:
        session = Session(self, handle)
        self._sessions[handle.client_id] = session
        if self.browser_token is None:
            session.open()
        else:
            session.ask_token(self.browser_token)

    def _disconnect(self, handle: viser.ClientHandle) -> None:
        session = self._sessions.pop(handle.client_id, None)
        if session is not None:
            session.close()

    async def _poll_worlds(self) -> None:
        """Refresh the list of loaded worlds every ``WORLD_POLL_S`` and hand it to every session."""
        assert self.client is not None
        while True:
            try:
                worlds = sorted(info.world_id for info in await self.client.worlds.list() if info.loaded)
                problem = None
            except WorldweaveError as error:
                worlds, problem = self.worlds, str(error)
            self.worlds = worlds
            for session in list(self._sessions.values()):
                session.show_worlds(worlds, problem)
            await asyncio.sleep(WORLD_POLL_S)


class Session:
    """One browser tab: its world, its drawn cloud and frustums, its panel. Its coroutines run on the viewer's loop."""

    def __init__(self, viewer: Viewer, handle: viser.ClientHandle) -> None:
        self.viewer, self.handle = viewer, handle
        self.world_id: str | None = None
        self.mirror = PointCloudMirror()
        self._stream_level = 0.0
        self.opened = False
        self._picked_first = False
        self._follow: asyncio.Future | None = None
        self._drawer: asyncio.Future | None = None
        self._dirty = threading.Event()
        self._fitted = False
        self._steps: list[str] = []
        self._step_count = 0
        self._anchors: set[int] = set()
        self._watch: asyncio.Future | None = None
        self._last_frame: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------- panel

    def ask_token(self, token: str) -> None:
        """Show nothing but a token prompt until the browser enters ``token``."""
        with self.handle.gui.add_modal("worldweave viewer") as modal:
            note = self.handle.gui.add_markdown("This viewer is reachable from the network: enter the server's token.")
            entry = self.handle.gui.add_text("Token", initial_value="")
            button = self.handle.gui.add_button("Open")

        @button.on_click
        def _(_: viser.GuiEvent) -> None:
            if hmac.compare_digest(entry.value.encode(), token.encode()):
                modal.close()
                self.open()
            else:
                note.content = "Wrong token; try again."

    def open(self) -> None:
        """Build the panel; the next world list picks the world to show."""
        gui = self.handle.gui
        gui.add_markdown(f"**worldweave** — server `{self.viewer.target}`")
        self.world_menu = gui.add_dropdown("World", [NO_WORLD], hint="the worlds this server holds for the token's tenant")
        self.color_menu = gui.add_dropdown("Colour", scene.COLOR_MODES, initial_value="rgb",
                                           hint="RGB; source (seed blue, generated orange, inserted green); height; "
                                                "confidence (dark: a guess, yellow: sure)")
        self.level_slider = gui.add_slider("Min confidence", min=0.0, max=1.0, step=0.05, initial_value=0.0,
                                           hint="hide voxels whose confidence is below this level")
        self.status = gui.add_markdown("Waiting for the list of worlds…")
        fit = gui.add_button("Fit view to the cloud")
        with gui.add_folder("At this view"):
            render = gui.add_button("Render memory here")
            step = gui.add_button("Step the world here")
            self.frame_caption = gui.add_markdown(
                "Render: memory at the browser's camera. Step: generate a frame there (it is fused into the world)."
            )
            self.frame_image = gui.add_image(np.zeros((8, 16, 3), np.uint8), visible=False)
            self.timings = gui.add_markdown("")
        with gui.add_folder("Latest step (any client)"):
            self.step_caption = gui.add_markdown("No step of this world seen yet.")
            self.step_image = gui.add_image(np.zeros((8, 16, 3), np.uint8), visible=False)
            self.step_timings = gui.add_markdown("")

        self.world_menu.on_update(lambda _: self.viewer.submit(self._select(self.world_menu.value)))
        self.color_menu.on_update(lambda _: self._dirty.set())
        self.level_slider.on_update(lambda _: self._dirty.set())
        fit.on_click(lambda _: self.viewer.submit(self._fit()))
        render.on_click(lambda _: self.viewer.submit(self._at_view(step=False)))
        step.on_click(lambda _: self.viewer.submit(self._at_view(step=True)))
        self.opened = True
        self.show_worlds(self.viewer.worlds, None)

    def show_worlds(self, worlds: list[str], problem: str | None) -> None:
        """Offer ``worlds`` in the menu; the first list picks the viewer's ``world_id`` or the first world."""
        if not self.opened:
            return
        options = (NO_WORLD, *worlds)
        if tuple(self.world_menu.options) != options:
            self.world_menu.options = options
        if problem is not None:
            self.status.content = f"Cannot list the worlds: {problem}"
        elif not self._picked_first and worlds:
            self._picked_first = True
            wanted = self.viewer.world_id
            self.world_menu.value = wanted if wanted in worlds else worlds[0]
        elif not worlds and not self._picked_first:
            self.status.content = "No world on this server yet: create one (or LoadWorld a saved one)."

    def close(self) -> None:
        """Stop following (the tab closed or the viewer stops); from any thread."""
        self.viewer._loop.call_soon_threadsafe(self._stop_following)

    def _stop_following(self) -> None:
        for task in (self._follow, self._drawer, self._watch):
            if task is not None:
                task.cancel()

    # ------------------------------------------------------------------------------------------- following

    async def _select(self, world_id: str) -> None:
        wanted = None if world_id == NO_WORLD else world_id
        if wanted == self.world_id:
            return
        self._stop_following()
        self._clear()
        self.world_id = wanted
        if wanted is None:
            self.status.content = "No world shown."
            return
        self.status.content = f"Loading `{wanted}`…"
        try:  # stream every voxel (the world's lowest confidence level) and filter here
            levels = (await self.viewer.client.worlds.get(wanted)).config.confidence_levels
        except WorldweaveError as error:
            self.status.content = f"Cannot show `{wanted}`: {error}"
            return
        if self.world_id != wanted:  # another world was picked meanwhile
            return
        self._stream_level = min(levels, default=0.0)
        self._follow = asyncio.ensure_future(self._follow_world(wanted))
        self._drawer = asyncio.ensure_future(self._draw_loop())
        self._watch = asyncio.ensure_future(self._watch_world(wanted))

    def _clear(self) -> None:
        self.mirror = PointCloudMirror()
        self._fitted = False
        self._last_frame = None
        self.handle.scene.reset()
        self._steps.clear()
        self._anchors.clear()
        self.frame_image.visible = False
        self.timings.content = ""
        self.step_image.visible = False
        self.step_caption.content = "No step of this world seen yet."
        self.step_timings.content = ""

    async def _follow_world(self, world_id: str) -> None:
        client = self.viewer.client
        assert client is not None
        while True:
            try:
                async for chunk in client.point_cloud.stream(world_id, self.mirror.version, follow=True,
                                                             min_confidence=self._stream_level):
                    if self.mirror.apply(chunk) is not None:
                        self._dirty.set()
            except NotFoundError:
                self._deleted(world_id)
                return
            except MirrorError:
                self.mirror = PointCloudMirror()  # a missed chunk: start again from a snapshot
                continue
            except WorldweaveError as error:
                self.status.content = f"Lost the stream of `{world_id}` ({error}); retrying in {RETRY_S:g} s."
            await asyncio.sleep(RETRY_S)

    async def _watch_world(self, world_id: str) -> None:
        """Show every step of ``world_id`` (any client's) and its anchors, from its ``WatchWorld`` stream; a deleted
        world ends it (``_follow_world`` says so)."""
        client = self.viewer.client
        assert client is not None
        while True:
            try:
                async for event in watch_world(client, world_id, thumbnail_max_width=WATCH_THUMBNAIL_PX,
                                               include_anchors=True):
                    self._show_step(event)
            except NotFoundError:
                return
            except WorldweaveError as error:
                self.step_caption.content = f"Lost the steps of `{world_id}` ({error}); retrying in {RETRY_S:g} s."
            await asyncio.sleep(RETRY_S)

    def _show_step(self, event: StepEvent) -> None:
        """Draw a watch message: its anchors, and for a frame its camera, thumbnails and stage timings."""
        drawn = self.handle.scene
        if event.anchors_complete:
            for gone in self._anchors - {a.anchor_id for a in event.anchors}:
                drawn.remove_by_name(f"/anchors/{gone}")
                self._anchors.discard(gone)
        for anchor in event.anchors:
            self._add_frustum(f"/anchors/{anchor.anchor_id}", anchor.c2w, anchor.intrinsics, ANCHOR_COLOR, 0.2)
            self._anchors.add(anchor.anchor_id)
        if event.frame_id is None:
            return
        self._add_step_frustum(event.c2w, event.intrinsics)
        if event.thumbnail is not None and event.memory_thumbnail is not None:
            self.step_image.image = scene.side_by_side(event.thumbnail, event.memory_thumbnail)
            self.step_image.visible = True
        lost = f" · {event.dropped} earlier frame(s) skipped (the viewer fell behind)" if event.dropped else ""
        self.step_caption.content = (
            f"Latest step: frame {event.frame_id}, version {event.version}, coverage {event.coverage:.0%}. Left: the "
            f"generated frame; right: the memory render it was conditioned on.\n\n{len(self._steps)} step cameras "
            f"(orange) and {len(self._anchors)} anchors (blue) drawn{lost}."
        )
        self.step_timings.content = "Stage timings (ms):\n\n" + timing_lines(event.timings_s)

    def _deleted(self, world_id: str) -> None:
        self._drawer.cancel()
        self._clear()
        self.frame_caption.content = ""
        self.world_id = None
        self.world_menu.value = NO_WORLD
        message = f"World `{world_id}` was deleted on the server. Pick another world."
        self.status.content = f"**{message}**"
        self.handle.add_notification("World deleted", message.replace("`", ""), color="red", auto_close_seconds=None)

    async def _draw_loop(self) -> None:
        while True:
            if self._dirty.is_set():
                self._dirty.clear()
                self._draw()
            await asyncio.sleep(DRAW_INTERVAL_S)

    def _draw(self) -> None:
        """Send the mirror's cloud (thinned, coloured) to the browser, and frame it the first time."""
        mirror = self.mirror
        positions, colors = mirror.points()
        level = float(self.level_slider.value)
        kept = np.flatnonzero(mirror.at_or_above(level)) if level > 0 else np.arange(len(mirror))
        rows = kept[scene.stable_subset(mirror.keys[kept], self.viewer.max_points)]
        shown = positions[rows]
        self.status.content = (
            f"`{self.world_id}` · version {mirror.version} · {len(mirror):,} voxels of {mirror.voxel_size_m * 100:g} cm"
            + (f" · {len(kept):,} at confidence >= {level:g}" if level > 0 else "")
            + (f" · showing {len(rows):,} (cap {self.viewer.max_points:,})" if len(rows) < len(kept) else "")
        )
        if not len(rows):
            self.handle.scene.remove_by_name("/world/cloud")
            return
        self.handle.scene.add_point_cloud(
            "/world/cloud", shown,
            scene.point_colors(self.color_menu.value, colors[rows], mirror.flags[rows], shown, mirror.confidence[rows]),
            point_size=scene.point_size_m(mirror.voxel_size_m, len(rows), len(kept)),
            point_shape="square", point_shading="flat", precision="float32",
        )
        if not self._fitted:
            self._fitted = True
            self._frame(shown)

    def _frame(self, points_m: np.ndarray) -> None:
        camera = self.handle.camera
        eye, target = scene.framing(points_m, camera.fov)
        with self.handle.atomic():
            camera.up_direction = (0.0, 0.0, 1.0)
            camera.position = eye
            camera.look_at = target

    async def _fit(self) -> None:
        if len(self.mirror):
            self._frame(self.mirror.points()[0][scene.stable_subset(self.mirror.keys, self.viewer.max_points)])

    # ------------------------------------------------------------------------------------------- at this view

    async def _at_view(self, *, step: bool) -> None:
        """Render memory at the browser's camera and, with ``step``, step the world there; show both side by side."""
        client, world_id = self.viewer.client, self.world_id
        if client is None or world_id is None:
            self.frame_caption.content = "Pick a world first."
            return
        camera = self.handle.camera
        c2w = scene.camera_c2w(camera.wxyz, camera.position)
        intrinsics = scene.camera_intrinsics(camera.fov, camera.aspect, AT_VIEW_WIDTH_PX)
        try:
            memory = (await client.render(world_id, c2w, intrinsics=intrinsics))[0]
            if step:
                frame = (await client.step(world_id, c2w, intrinsics=intrinsics, depth=None))[0]
        except WorldweaveError as error:
            self.frame_caption.content = f"{'Step' if step else 'Render'} failed: {error}"
            return
        if step:
            self._last_frame = frame.rgb
            self.timings.content = "Stage timings of that step (ms):\n\n" + timing_lines(frame.timings_s)
            caption = (f"Left: generated frame {frame.frame_id} (coverage {frame.coverage:.0%}); right: memory before "
                       "it, at the same camera.")
        else:
            caption = "Left: the last frame this tab generated; right: memory at this camera (coverage " \
                      f"{memory.coverage:.0%}, version {memory.version})."
        left = self._last_frame if self._last_frame is not None else np.zeros_like(memory.rgb)
        self.frame_image.image = scene.side_by_side(left, memory.rgb)
        self.frame_image.visible = True
        self.frame_caption.content = caption

    def _add_step_frustum(self, c2w: np.ndarray, intrinsics: Intrinsics) -> None:
        """Draw a step's camera (any client's, the page's too: all come from the watch), keeping the last
        ``RECENT_STEPS``. Named by a counter: a restored checkpoint gives frame ids again."""
        self._step_count += 1
        name = f"/steps/{self._step_count}"
        self._add_frustum(name, c2w, intrinsics, STEP_COLOR, 0.25)
        self._steps.append(name)
        while len(self._steps) > RECENT_STEPS:
            self.handle.scene.remove_by_name(self._steps.pop(0))

    def _add_frustum(
        self, name: str, c2w: np.ndarray, intrinsics: Intrinsics, color: tuple[int, int, int], scale_m: float
    ) -> None:
        """A camera (4x4 camera-to-world, OpenCV) as a wireframe frustum ``scale_m`` deep: an image on it would
        cover the view from that camera."""
        self.handle.scene.add_camera_frustum(
            name, fov=np.radians(intrinsics.fov_y_deg), aspect=intrinsics.width / intrinsics.height, scale=scale_m,
            thickness=2.0, thickness_units="screen", color=color, wxyz=scene.wxyz_of(c2w), position=c2w[:3, 3],
        )


def timing_lines(timings_s: dict[str, float]) -> str:
    """Stage timings (seconds) as markdown list lines in milliseconds, "total" last."""
    return "\n".join(
        f"- {stage}: {seconds * 1e3:.1f}"
        for stage, seconds in sorted(timings_s.items(), key=lambda item: (item[0] == "total", item[0]))
    )


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("viewer task failed", exc_info=future.exception())
