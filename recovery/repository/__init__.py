"""The image repository (backup location): chunk store, image manifests, locking.

The byte layouts are specified in docs/FORMAT.md; this package implements that spec.
"""
