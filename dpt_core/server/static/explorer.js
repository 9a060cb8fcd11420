// dpt explorer: pan and zoom for the lineage picture. Our own, small; the page works
// without it (the picture then scrolls, and every box is a plain link).
"use strict";

(function () {
  function setUp(wrap) {
    var svg = wrap.querySelector("svg.lineage");
    if (!svg) return;
    var width = parseFloat(wrap.getAttribute("data-width")) || 1;
    var height = parseFloat(wrap.getAttribute("data-height")) || 1;
    wrap.classList.add("zoomable");
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");

    var view = { x: 0, y: 0, scale: 1 };
    var BOX_W = parseFloat(wrap.getAttribute("data-box-width")) || 232;
    var BOX_H = parseFloat(wrap.getAttribute("data-box-height")) || 46;
    var MIN = 0.05, MAX = 4;

    function size() {
      return { w: wrap.clientWidth || 1, h: wrap.clientHeight || 1 };
    }
    function apply() {
      var s = size();
      svg.setAttribute("viewBox", [view.x, view.y, s.w / view.scale, s.h / view.scale].join(" "));
    }
    function clamp(value) {
      return Math.min(MAX, Math.max(MIN, value));
    }
    function zoomAt(factor, px, py) {
      var next = clamp(view.scale * factor);
      var wx = view.x + px / view.scale, wy = view.y + py / view.scale;
      view.scale = next;
      view.x = wx - px / next;
      view.y = wy - py / next;
      apply();
    }
    function fit() {
      var s = size();
      view.scale = clamp(Math.min(s.w / width, s.h / height, 1));
      view.x = (width - s.w / view.scale) / 2;
      view.y = (height - s.h / view.scale) / 2;
      apply();
    }
    function centreOn(box) {
      var s = size();
      view.scale = 1;
      var x = parseFloat(box.getAttribute("data-x")), y = parseFloat(box.getAttribute("data-y"));
      view.x = x + BOX_W / 2 - s.w / 2;
      view.y = y + BOX_H / 2 - s.h / 2;
      apply();
    }
    function start() {
      // No taller than the picture needs (at the scale it opens with).
      var s = size();
      var opening = Math.min(s.w / width, 1);
      var wanted = Math.max(220, Math.ceil(height * Math.max(opening, 0.6)) + 24);
      if (wanted < s.h) wrap.style.height = wanted + "px";
      s = size();
      var root = svg.querySelector(".node.root");
      var whole = Math.min(s.w / width, s.h / height);
      if (!root || whole >= 0.6) {
        fit();
      } else {
        centreOn(root);
        zoomAt(0.6, s.w / 2, s.h / 2);
      }
    }

    wrap.addEventListener("wheel", function (event) {
      event.preventDefault();
      var r = wrap.getBoundingClientRect();
      zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - r.left, event.clientY - r.top);
    }, { passive: false });

    var drag = null, moved = false;
    wrap.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) return;
      drag = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y, id: event.pointerId };
      moved = false;
    });
    wrap.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.id) return;
      var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (!moved && Math.abs(dx) + Math.abs(dy) < 5) return;
      if (!moved) {
        moved = true;
        wrap.classList.add("dragging");
        wrap.setPointerCapture(drag.id);
      }
      view.x = drag.vx - dx / view.scale;
      view.y = drag.vy - dy / view.scale;
      apply();
    });
    function end() {
      drag = null;
      wrap.classList.remove("dragging");
    }
    wrap.addEventListener("pointerup", end);
    wrap.addEventListener("pointercancel", end);
    // A drag is not a click on the box it started on.
    wrap.addEventListener("click", function (event) {
      if (moved) {
        event.preventDefault();
        event.stopPropagation();
        moved = false;
      }
    }, true);

    var controls = document.createElement("div");
    controls.className = "graph-controls";
    [["+", "Zoom in", function () { var s = size(); zoomAt(1.25, s.w / 2, s.h / 2); }],
     ["\u2212", "Zoom out", function () { var s = size(); zoomAt(0.8, s.w / 2, s.h / 2); }],
     ["fit", "Show the whole graph", fit],
     ["1:1", "Actual size, centred on where it starts", function () {
       var root = svg.querySelector(".node.root");
       if (root) centreOn(root); else { view.scale = 1; apply(); }
     }]].forEach(function (spec) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = spec[0];
      button.title = spec[1];
      button.setAttribute("aria-label", spec[1]);
      button.addEventListener("click", function (event) { event.stopPropagation(); spec[2](); });
      button.addEventListener("pointerdown", function (event) { event.stopPropagation(); });
      controls.appendChild(button);
    });
    wrap.parentNode.insertBefore(controls, wrap);
    window.addEventListener("resize", apply);
    start();
  }

  function ready() {
    var wraps = document.querySelectorAll(".graph-wrap");
    for (var i = 0; i < wraps.length; i++) setUp(wraps[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
