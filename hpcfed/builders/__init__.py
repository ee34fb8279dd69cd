"""Offline dataset builders, run once at set-up (`make data`); see hpcfed.data for the readers."""
