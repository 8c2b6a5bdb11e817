"""The live viewer: a world's point cloud in the browser, kept current from the point-cloud stream.

``worldweave view --server ADDR`` (``cli``) or ``worldweave serve --viewer PORT``; in code, ``app.Viewer``. What it
draws is computed by the pure functions of ``scene``. A client of the SDK like any other: it sees what the gRPC API
shows a watcher (docs/viewer.md).
"""
