// The face service's page: plain DOM calls to the REST API, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem("kerascnn-key") || "";
let webcamPhotos = [];

function say(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "ok";
}

async function api(method, path, form) {
  const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
  const response = await fetch(path, { method, headers, body: form });
  const body = await response.json().catch(() => ({ error: response.statusText, type: "BadResponse" }));
  if (!response.ok) {
    throw new Error(`${body.error} (${body.type}, HTTP ${response.status})`);
  }
  return body;
}

function showKey() {
  $("key-state").textContent = apiKey ? "key set" : "no key";
}

function score(x) {
  return Number(x).toFixed(3);
}

function line(parent, text, cls) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  parent.appendChild(p);
  return p;
}

async function refreshPeople() {
  const body = $("people-list");
  try {
    const data = await api("GET", "/v1/people");
    body.replaceChildren();
    for (const person of data.identities) {
      const row = document.createElement("tr");
      row.dataset.name = person.name;
      for (const text of [person.name, person.templates, person.created.replace("T", " ").slice(0, 16)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      const cell = document.createElement("td");
      const remove = document.createElement("button");
      remove.textContent = "Remove";
      remove.className = "small danger";
      remove.addEventListener("click", () => removePerson(person.name));
      cell.appendChild(remove);
      row.appendChild(cell);
      body.appendChild(row);
    }
  } catch (err) {
    say("cannot list people: " + err.message, true);
  }
}

async function removePerson(name) {
  if (!confirm(`Forget ${name}? Every photo of theirs is removed.`)) return;
  try {
    const data = await api("DELETE", "/v1/people/" + encodeURIComponent(name));
    say(`removed ${data.name} (${data.removed_templates} photos)`);
    await refreshPeople();
  } catch (err) {
    say("cannot remove: " + err.message, true);
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem("kerascnn-key", apiKey);
  $("api-key").value = "";
  showKey();
  refreshPeople();
});

$("camera-start").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" } });
    $("camera").srcObject = stream;
    $("camera").hidden = false;
    $("camera-capture").disabled = false;
  } catch (err) {
    say("no webcam: " + err.message, true);
  }
});

$("camera-capture").addEventListener("click", () => {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    webcamPhotos.push(blob);
    $("captured").textContent = `${webcamPhotos.length} webcam photos`;
  }, "image/jpeg", 0.92);
});

$("enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("enroll-name").value.trim();
  const form = new FormData();
  for (const file of $("enroll-photos").files) form.append("photo", file, file.name);
  webcamPhotos.forEach((blob, i) => form.append("photo", blob, `webcam${i + 1}.jpg`));
  const out = $("enroll-result");
  out.replaceChildren();
  try {
    const data = await api("POST", "/v1/people/" + encodeURIComponent(name) + "/faces", form);
    const added = data.enrolled[name] || 0;
    line(out, `${name}: ${added} photos enrolled, ${data.skipped} already there`, "ok");
    webcamPhotos = [];
    $("captured").textContent = "0 webcam photos";
    $("enroll-form").reset();
    await refreshPeople();
  } catch (err) {
    line(out, err.message, "error");
  }
});

$("identify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  const file = $("identify-photo").files[0];
  form.append("photo", file, file.name);
  form.append("top_k", $("identify-top-k").value || "3");
  if ($("identify-threshold").value !== "") form.append("threshold", $("identify-threshold").value);
  const out = $("identify-result");
  out.replaceChildren();
  try {
    const data = await api("POST", "/v1/identify", form);
    const verdict = data.recognized ? `${data.name}` : "not recognized";
    line(out, verdict, "verdict " + (data.recognized ? "ok" : "stranger")).dataset.name = data.name || "";
    line(out, `score ${score(data.score)}, threshold ${score(data.threshold)} (${data.metric})`, "muted");
    const list = document.createElement("ol");
    list.className = "candidates";
    for (const c of data.candidates) {
      const item = document.createElement("li");
      item.textContent = `${c.name} ${score(c.score)}`;
      list.appendChild(item);
    }
    out.appendChild(list);
  } catch (err) {
    line(out, err.message, "error");
  }
});

$("verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  const file = $("verify-photo").files[0];
  form.append("name", $("verify-name").value.trim());
  form.append("photo", file, file.name);
  const out = $("verify-result");
  out.replaceChildren();
  try {
    const data = await api("POST", "/v1/verify", form);
    const verdict = data.match ? `match: ${data.name}` : `no match: not ${data.name}`;
    line(out, verdict, "verdict " + (data.match ? "ok" : "stranger"));
    line(out, `score ${score(data.score)}, threshold ${score(data.threshold)} (${data.metric})`, "muted");
  } catch (err) {
    line(out, err.message, "error");
  }
});

$("people-refresh").addEventListener("click", refreshPeople);
showKey();
if (apiKey) refreshPeople();
