/* pseudopet interactive viewer (pseudopet_bids/reports/viewer.py writes the page).
 * Runs from file:// with no network: NiiVue (global `niivue`, inlined before this script) and
 * the volumes (base64 gzipped NIfTI in each viewer's <script type="application/json">) are in
 * the page. Where WebGL2 is missing, the viewer's static figures are shown instead. */
(function () {
  "use strict";

  // the deficit −Z: dark red at the threshold, brightening to yellow for the strongest
  // (the colours of the static Z figures, reports/figures.py; brighter = stronger so strong
  // foci stand out on the grey T1w)
  // (index 0, below the threshold, is transparent: NiiVue maps values under cal_min there)
  var ZDEFICIT = {
    R: [0, 179, 255, 255, 255], G: [0, 0, 90, 196, 255], B: [0, 0, 0, 0, 102],
    A: [0, 255, 255, 255, 255], I: [0, 1, 85, 170, 255]
  };

  function hasWebGL2() {
    try {
      var c = document.createElement("canvas");
      return !!(window.WebGL2RenderingContext && c.getContext("webgl2"));
    } catch (e) {
      return false;
    }
  }

  function fmt(v, d) { return (Math.round(v * Math.pow(10, d)) / Math.pow(10, d)).toFixed(d); }

  function showFallback(root, why) {
    root.classList.add("pp-nowebgl");
    root.querySelector(".pp-fallback").hidden = false;
    root.querySelector(".pp-status").textContent = why;
  }

  function convention(root, radiological) {
    root.querySelector(".pp-convention").textContent = radiological ?
      "Radiological convention: the patient's right is on the screen's left (R/L marked)." :
      "Neurological convention: the patient's right is on the screen's right (R/L marked).";
  }

  async function start(root) {
    var spec = JSON.parse(root.querySelector("script.pp-viewer-data").textContent);
    if (typeof niivue === "undefined" || !hasWebGL2()) {
      showFallback(root, "No WebGL2 in this browser: static figures shown instead.");
      return null;
    }
    var nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.1, 1, 0.2, 1], crosshairWidth: 1,
      isRadiologicalConvention: true, isOrientationTextVisible: true, show3Dcrosshair: false,
      isColorbar: true, logLevel: "error", loadingText: "", dragAndDropEnabled: false,
      multiplanarForceRender: false, textHeight: 0.06, crosshairGap: 6
    });
    await nv.attachToCanvas(root.querySelector("canvas.pp-canvas"));
    nv.addColormap("pp_zdeficit", ZDEFICIT);
    var index = {};
    for (var k = 0; k < spec.layers.length; k++) {
      var L = spec.layers[k];
      var opts = {
        base64: L.b64, name: L.key + ".nii", colormap: L.colormap,
        opacity: k === 0 ? 1 : 0, cal_min: L.cal_min, cal_max: L.cal_max, trustCalMinMax: true,
        colorbarVisible: false
      };
      var img = await niivue.NVImage.loadFromBase64(opts);
      nv.addVolume(img);
      index[L.key] = nv.volumes.length - 1;
    }
    nv.setSliceType(nv.sliceTypeMultiplanar);
    var state = { nv: nv, spec: spec, index: index, pet: "", z: "", ready: false };

    function pos() {
      var mm = nv.frac2mm(nv.scene.crosshairPos);
      return [mm[0], mm[1], mm[2]];
    }
    function readout(data) {
      var mm = pos();
      var text = "(" + fmt(mm[0], 1) + ", " + fmt(mm[1], 1) + ", " + fmt(mm[2], 1) + ") mm";
      var values = data && data.values ? data.values : [];
      spec.layers.forEach(function (L) {
        var v = values[index[L.key]];
        if (!v || !isFinite(v.value) || L.kind === "base") { return; }
        if (L.kind === "z") {
          if (L.key === state.z) { text += " · Z " + fmt(-v.value, 2); }
        } else {
          text += " · " + L.label + " " + fmt(v.value, 0);
        }
      });
      var out = root.querySelector(".pp-pos");
      out.textContent = text;
      out.setAttribute("data-mm", mm.map(function (v) { return fmt(v, 2); }).join(","));
    }
    function apply() {
      var opacity = Number(root.querySelector(".pp-opacity").value) / 100;
      spec.layers.forEach(function (L) {
        if (L.kind === "pet") {
          nv.setOpacity(index[L.key], L.key === state.pet ? opacity : 0);
          nv.volumes[index[L.key]].colorbarVisible = L.key === state.pet;
        } else if (L.kind === "z") {
          nv.setOpacity(index[L.key], L.key === state.z ? 1 : 0);
          nv.volumes[index[L.key]].colorbarVisible = L.key === state.z;
        }
      });
      root.querySelectorAll(".pp-clusters").forEach(function (t) {
        t.hidden = t.getAttribute("data-analysis") !== state.z;
      });
      nv.updateGLVolume();
    }
    function goTo(mm) {
      nv.scene.crosshairPos = nv.mm2frac([mm[0], mm[1], mm[2]]);
      nv.drawScene();
      nv.createOnLocationChange();
    }
    state.goTo = goTo;
    state.position = pos;

    root.querySelectorAll('input[type="radio"]').forEach(function (r) {
      r.addEventListener("change", function () { state.pet = r.value; apply(); });
    });
    root.querySelector(".pp-opacity").addEventListener("input", apply);
    var zsel = root.querySelector(".pp-z");
    state.z = zsel.value;
    zsel.addEventListener("change", function () { state.z = zsel.value; apply(); });
    var radio = root.querySelector(".pp-radio");
    radio.addEventListener("change", function () {
      nv.setRadiologicalConvention(radio.checked);
      convention(root, radio.checked);
    });
    convention(root, true);
    var layouts = { multi: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial,
                    coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal };
    var lay = root.querySelector(".pp-layout");
    lay.addEventListener("change", function () { nv.setSliceType(layouts[lay.value]); });
    root.querySelectorAll("tr[data-peak]").forEach(function (tr) {
      function jump() {
        root.querySelectorAll("tr.pp-active").forEach(function (t) {
          t.classList.remove("pp-active");
        });
        tr.classList.add("pp-active");
        goTo(tr.getAttribute("data-peak").split(",").map(Number));
      }
      tr.addEventListener("click", jump);
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") { jump(); } });
    });
    nv.onLocationChange = function (data) { readout(data); };
    apply();
    // start at the top-ranked cluster's peak of the shown analysis, if any
    var first = root.querySelector('.pp-clusters:not([hidden]) tr[data-peak]');
    if (first) {
      goTo(first.getAttribute("data-peak").split(",").map(Number));
    } else {
      nv.createOnLocationChange();
    }
    root.querySelector(".pp-status").textContent =
      "Drag to move the crosshair, scroll to change slice; click a cluster row to go to its peak.";
    state.ready = true;
    root.setAttribute("data-ready", "1");
    return state;
  }

  window.ppViewers = {};
  function startAll() {
    document.querySelectorAll(".pp-viewer").forEach(function (root) {
      start(root).then(function (state) {
        if (state) { window.ppViewers[root.id] = state; }
      }).catch(function (err) {
        console.error("pseudopet viewer:", err);
        showFallback(root, "The interactive viewer failed (" + err + "): static figures shown.");
        root.setAttribute("data-ready", "error");
      });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
})();
