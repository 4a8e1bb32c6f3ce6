"""keras.Model subclasses with custom `train_step`: supervised baseline and the noise cycle."""
