"""A map widget for the admin that needs no CDN and still works when no tile server answers."""

from __future__ import annotations

from django.contrib.gis.forms.widgets import OSMWidget


class OfflineMapWidget(OSMWidget):
    """Django's OpenLayers widget with OpenLayers served from our own static files.

    Django loads OpenLayers from a CDN; here the same release (7.2.2, from the npm registry) is
    vendored under ``static/vendor/ol``. When the tile server cannot be reached, the map keeps a
    plain background and still takes clicks, drags and the raw-value textarea.
    """

    default_lon = -79.99
    default_lat = 40.44
    default_zoom = 11

    class Media:
        extend = False
        css = {"all": ("vendor/ol/ol.css", "gis/css/ol3.css")}
        js = ("vendor/ol/ol.js", "gis/js/OLMapWidget.js")
