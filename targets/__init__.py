"""Hardware targets: the TOML schema, the shipped presets, and code generation for them."""

from cimc.targets.schema import Target, load_target, preset_names, preset_text, target_from_dict

__all__ = ["Target", "load_target", "preset_names", "preset_text", "target_from_dict"]
