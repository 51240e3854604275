"""TuneLab's Gradio app: a thin view over run folders and the library (see app/ui.py)."""
