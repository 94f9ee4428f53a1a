"""Words to classes, colours, boxes and score calibration for the text-to-mask slugs."""
