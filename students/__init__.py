"""Student architectures: importable from other repositories without the trainer (torch, diffusers, timm only)."""

__all__: list[str] = []
