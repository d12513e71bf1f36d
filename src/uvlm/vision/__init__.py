"""Vision side: SigLIP and VQ encoders, CPU-scale stand-ins, the judge, the feature cache."""
