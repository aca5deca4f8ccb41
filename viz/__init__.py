"""heapline's presentation layer: units for people, plotly figures and the HTML report."""
