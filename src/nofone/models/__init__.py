"""Generative models of normal expression (torch modules and their fit/save/load)."""
