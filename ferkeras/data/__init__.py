"""Data sources, the synthetic face generator and the tf.data pipeline."""
