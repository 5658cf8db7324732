"""The report's figures, one function per figure, each returning PNG bytes (latent_scatter
writes cohort-de's latent.png): canvas.py holds what they share; model.py the model's figures;
calls.py the DE calls'; cohort.py those of `nofone cohort-de`."""
