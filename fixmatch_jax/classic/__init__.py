"""Classic semi-supervised learning: QDA with pseudo-labels (Kaggle's Instant Gratification).

`qda` is scikit-learn's QuadraticDiscriminantAnalysis in JAX with padding masks;
`instant_gratification` is the data generator and the two-round pseudo-labelling pipeline.
"""
