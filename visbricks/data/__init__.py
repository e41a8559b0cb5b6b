"""Data layer: formats in, tensors out; augmentation keeps boxes and masks aligned with pixels."""
