"""Views: plotly figure builders (pure functions of runs), the offline HTML report and the table renderers.

Imports plotly when a figure is built, never torch.
"""
