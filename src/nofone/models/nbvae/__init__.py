"""A negative-binomial variational autoencoder (NB-VAE): module, config, training, model."""
