"""Data: sources (TFDS and offline datasets as arrays), labelled splits, augmentation ops,
RandAugment, and the tf.data input pipelines. Import the submodules directly."""
