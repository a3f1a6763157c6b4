// A small hand-written WebGL viewer for one coloured mesh, embedded in the page (no network).
// Data: base64 of [float32 xyz * V][uint8 rgb * V][uint32 abc * F], in the arch's own frame
// (x: patient right if known, y: anterior, z: up out of the occlusal surface).
(function () {
  var el = document.getElementById("mesh-data"), msg = document.getElementById("msg");
  var canvas = document.getElementById("gl");
  var gl = canvas.getContext("webgl2") || canvas.getContext("webgl");
  if (!gl) { msg.textContent = "3D view needs WebGL, which this browser has turned off; the images above show the same map."; return; }
  var V = +el.dataset.vertices, F = +el.dataset.faces;
  var bin = atob(el.textContent.trim()), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  var pos = new Float32Array(bytes.buffer, 0, 3 * V);
  var col = new Uint8Array(bytes.buffer, 12 * V, 3 * V);
  var idxOff = 12 * V + 3 * V; idxOff += (4 - idxOff % 4) % 4;
  var idx = new Uint32Array(bytes.buffer, idxOff, 3 * F);
  if (!(gl instanceof WebGL2RenderingContext) && !gl.getExtension("OES_element_index_uint")) { msg.textContent = "3D view: this WebGL cannot draw large meshes."; return; }
  // Per-vertex normals (area weighted) for light; centre and size for the camera.
  var nrm = new Float32Array(3 * V), lo = [1e30, 1e30, 1e30], hi = [-1e30, -1e30, -1e30];
  for (var f = 0; f < F; f++) {
    var a = 3 * idx[3 * f], b = 3 * idx[3 * f + 1], c = 3 * idx[3 * f + 2];
    var ux = pos[b] - pos[a], uy = pos[b + 1] - pos[a + 1], uz = pos[b + 2] - pos[a + 2];
    var vx = pos[c] - pos[a], vy = pos[c + 1] - pos[a + 1], vz = pos[c + 2] - pos[a + 2];
    var nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
    [a, b, c].forEach(function (k) { nrm[k] += nx; nrm[k + 1] += ny; nrm[k + 2] += nz; });
  }
  for (var v = 0; v < V; v++) for (var k = 0; k < 3; k++) { lo[k] = Math.min(lo[k], pos[3 * v + k]); hi[k] = Math.max(hi[k], pos[3 * v + k]); }
  var ctr = [0, 1, 2].map(function (k) { return 0.5 * (lo[k] + hi[k]); });
  var radius = 0.5 * Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) || 1;
  function shader(type, src) { var s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; }
  var prog = gl.createProgram();
  gl.attachShader(prog, shader(gl.VERTEX_SHADER,
    "attribute vec3 p; attribute vec3 n; attribute vec3 c; uniform mat4 m; uniform mat3 r; varying vec3 vc; varying float vl;" +
    "void main(){ gl_Position = m * vec4(p, 1.0); vec3 nn = normalize(r * n + vec3(1e-9)); vl = 0.45 + 0.55 * abs(nn.z); vc = c; }"));
  gl.attachShader(prog, shader(gl.FRAGMENT_SHADER,
    "precision mediump float; varying vec3 vc; varying float vl; void main(){ gl_FragColor = vec4(vc * vl, 1.0); }"));
  gl.linkProgram(prog); gl.useProgram(prog);
  function buffer(data, name, size, type, norm) {
    var b = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, b); gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    var loc = gl.getAttribLocation(prog, name); gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, size, type, norm, 0, 0);
  }
  buffer(pos, "p", 3, gl.FLOAT, false); buffer(nrm, "n", 3, gl.FLOAT, false); buffer(col, "c", 3, gl.UNSIGNED_BYTE, true);
  var ib = gl.createBuffer(); gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, ib); gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, idx, gl.STATIC_DRAW);
  gl.enable(gl.DEPTH_TEST);
  // Camera: yaw about the arch's up axis, pitch about screen x; orthographic, zoom by scale.
  var yaw = 0, pitch = 0, zoom = 1;
  var presets = JSON.parse(el.dataset.presets);  // name -> [yaw, pitch], from the arch (see report.py)
  function rot() {
    var cy = Math.cos(yaw * Math.PI / 180), sy = Math.sin(yaw * Math.PI / 180);
    var cp = Math.cos(pitch * Math.PI / 180), sp = Math.sin(pitch * Math.PI / 180);
    // R = Rx(pitch) * Rz(yaw), column-major 3x3
    return [cy, cp * sy, sp * sy, -sy, cp * cy, sp * cy, 0, -sp, cp];
  }
  function draw() {
    var w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    gl.viewport(0, 0, w, h); gl.clearColor(0.98, 0.98, 0.98, 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    var r = rot(), s = zoom / radius, ax = h / w, zs = 0.5 / radius;
    var t = [0, 1, 2].map(function (row) { return -(r[row] * ctr[0] + r[3 + row] * ctr[1] + r[6 + row] * ctr[2]); });
    var m = [s * ax * r[0], s * r[1], -zs * r[2], 0, s * ax * r[3], s * r[4], -zs * r[5], 0,
             s * ax * r[6], s * r[7], -zs * r[8], 0, s * ax * t[0], s * t[1], -zs * t[2], 1];
    gl.uniformMatrix4fv(gl.getUniformLocation(prog, "m"), false, new Float32Array(m));
    gl.uniformMatrix3fv(gl.getUniformLocation(prog, "r"), false, new Float32Array(r));
    gl.drawElements(gl.TRIANGLES, 3 * F, gl.UNSIGNED_INT, 0);
  }
  var drag = null;
  canvas.addEventListener("mousedown", function (e) { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (!drag) return; yaw += (e.clientX - drag[0]) * 0.5; pitch = Math.max(-180, Math.min(180, pitch + (e.clientY - drag[1]) * 0.5));
    drag = [e.clientX, e.clientY]; draw();
  });
  canvas.addEventListener("wheel", function (e) { e.preventDefault(); zoom *= Math.exp(-e.deltaY * 0.001); draw(); }, { passive: false });
  Array.prototype.forEach.call(document.querySelectorAll(".viewer button"), function (btn) {
    btn.addEventListener("click", function () { var p = presets[btn.dataset.view]; yaw = p[0]; pitch = p[1]; zoom = 1; draw(); });
  });
  window.addEventListener("resize", draw);
  draw();
  msg.textContent = V + " vertices, " + F + " triangles";
  document.body.dataset.viewer = "ready";
})();
