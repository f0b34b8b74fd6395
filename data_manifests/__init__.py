"""Dataset manifests (one TOML per layout), shipped inside featkit as package data."""
