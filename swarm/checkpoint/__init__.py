"""Checkpoints: x' as a folder of files, content-addressed chunks, and a manifest that names them.

Layers, inside out:
- ``manifest``: chunking, canonical manifest bytes and their validation (pure; the light client uses it);
- ``download``: the downloader's scheduling and verification core, with no I/O (pure).
"""
