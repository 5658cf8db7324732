"""The Deep Generative Decoder (Prada-Luengo et al. 2023): module, config, training, model."""
