"""The shipped training recipes (TOML) and Accelerate configs, installed as package data of
wavediff.recipes so a wheel runs them by name (`wavediff.config.recipe_path`)."""
