"""Saving and loading pruned models (safetensors + JSON, no pickle) and atomic writes."""
