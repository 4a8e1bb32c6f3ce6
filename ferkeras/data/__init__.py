"""Data sources, the synthetic face generator, eye alignment (`alignment`, shared with
`predict`) and the tf.data pipeline."""
