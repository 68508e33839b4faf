"""Checkpoints: x' as a folder of files, content-addressed chunks, and a manifest that names them.

Layers, inside out:
- ``manifest``: chunking, canonical manifest bytes and their validation (pure; the light client uses it);
- ``pointer``: signed pointers to a provider's checkpoint (pure apart from ``cryptography``);
- ``download``: the downloader's scheduling and verification core, with no I/O (pure);
- ``fetching``: one provider's download worker around that core, on either event loop;
- ``files``, ``store``: a checkpoint's files and a node's folder of them;
- ``wire``: the protocol's id, bounds, default timeouts and pointer messages (pure);
- ``serve``: one request answered, on either event loop (a node's service, the coordinator's archive);
- ``service``: a node's checkpoint service and client on its p2pd host (asyncio).
"""
