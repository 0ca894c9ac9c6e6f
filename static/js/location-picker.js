// The profile's location: a Leaflet map (no tiles needed: with no tile server it is a plain
// clickable background), the browser's geolocation, and the two number fields it writes to.
// Without JavaScript the number fields still work on their own.
(function () {
  "use strict";
  var lat = document.getElementById("id_latitude");
  var lon = document.getElementById("id_longitude");
  var box = document.getElementById("map");
  if (!lat || !lon || !box || typeof L === "undefined") { return; }
  var status = document.getElementById("geo-status");
  var start = lat.value && lon.value ? [parseFloat(lat.value), parseFloat(lon.value)] : [40.4406, -79.9959];
  var map = L.map(box, { center: start, zoom: lat.value ? 13 : 11, worldCopyJump: true });
  var tiles = box.dataset.tiles;
  if (tiles) { L.tileLayer(tiles, { maxZoom: 19 }).addTo(map); }
  L.control.scale().addTo(map);
  var marker = null;

  function place(latlng, pan) {
    var la = Math.max(-90, Math.min(90, latlng.lat));
    var lo = ((latlng.lng + 540) % 360) - 180;  // wrap a click past the date line
    lat.value = la.toFixed(6);
    lon.value = lo.toFixed(6);
    if (marker) { marker.setLatLng([la, lo]); } else { marker = L.circleMarker([la, lo], { radius: 9 }).addTo(map); }
    if (pan) { map.setView([la, lo], Math.max(map.getZoom(), 13)); }
  }
  if (lat.value && lon.value) { place({ lat: start[0], lng: start[1] }, false); }
  map.on("click", function (e) { place(e.latlng, false); });
  [lat, lon].forEach(function (input) {
    input.addEventListener("change", function () {
      var la = parseFloat(lat.value), lo = parseFloat(lon.value);
      if (isFinite(la) && isFinite(lo) && Math.abs(la) <= 90 && Math.abs(lo) <= 180) { place({ lat: la, lng: lo }, true); }
    });
  });
  var button = document.getElementById("use-device");
  if (button) {
    if (!navigator.geolocation) { button.hidden = true; return; }
    button.addEventListener("click", function () {
      status.textContent = "Asking your device…";
      navigator.geolocation.getCurrentPosition(function (pos) {
        place({ lat: pos.coords.latitude, lng: pos.coords.longitude }, true);
        status.textContent = "Location set from your device. Save to keep it.";
      }, function (err) {
        status.textContent = "Your device did not give a location (" + err.message + "). Click the map instead.";
      }, { enableHighAccuracy: false, timeout: 10000, maximumAge: 600000 });
    });
  }
})();
