// Maps of activities (public places): the list page's markers, or one activity's place.
// Without tiles the map is a plain background with the markers; without JavaScript, the list.
(function () {
  "use strict";
  if (typeof L === "undefined") { return; }
  function read(id) { var el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; }
  var listBox = document.getElementById("activities-map");
  var markers = read("activity-markers");
  if (listBox && markers) {
    if (!markers.length) { listBox.hidden = true; return; }
    var map = L.map(listBox);
    var bounds = [];
    markers.forEach(function (m) {
      var marker = L.circleMarker([m.lat, m.lon], { radius: 8 }).addTo(map);
      var link = document.createElement("a");
      link.href = m.url;
      link.textContent = m.title;
      marker.bindPopup(link);
      bounds.push([m.lat, m.lon]);
    });
    map.fitBounds(bounds, { maxZoom: 14, padding: [20, 20] });
  }
  var oneBox = document.getElementById("activity-map");
  var one = read("activity-marker");
  if (oneBox && one) {
    var single = L.map(oneBox, { center: [one.lat, one.lon], zoom: 14 });
    L.circleMarker([one.lat, one.lon], { radius: 9 }).addTo(single).bindTooltip(one.title);
  }
})();
