"""SmartWatch data: attributes, rendering, text templates, record mixtures and dataset folders."""
