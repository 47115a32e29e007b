"""Pictures people look at: training curves (more to come: ranked lists, CMC, heatmaps, t-SNE)."""
