"""A laptop gpupass has no model for yet: ``gpupass check`` (is this the model's laptop?) and
``gpupass probe`` (a model for this laptop, each value with its source)."""
