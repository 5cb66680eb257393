"""The notebook side: sessions (conf and engine), IPython magics and live widgets.

Everything a magic does can be done from a script with the same session objects.
"""
