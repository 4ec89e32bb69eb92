// The operator console: plain browser JavaScript against the gateway's own API (no build step,
// no CDN). The token lives in sessionStorage: it is gone when the tab closes.
"use strict";

const TEXT = {
  en: {
    title: "HeyGem presenter videos", language: "Language", signOut: "Sign out", signInTitle: "Sign in",
    signInHelp: 'Paste an API token (from "heygem token create"). It is kept for this browser tab only.',
    token: "API token", signIn: "Sign in", batch: "Batch", single: "Single", history: "History", library: "Templates",
    narration: "1. Narration", dropAudio: "Drop an audio file here, or", chooseAudio: "Choose audio",
    templates: "2. Presenter templates", templateSingle: "2. Presenter template",
    dropTemplates: "Drop template videos or portrait photos here, or", chooseTemplates: "Choose files",
    orLibrary: "or pick from the library:", zipToo: "Also make one ZIP", start: "Start", progress: "Progress",
    cancel: "Cancel", downloadZip: "Download all (ZIP)", refresh: "Refresh", clearFinished: "Clear finished jobs",
    when: "When", status: "Status", videos: "Videos", deleteJob: "Delete job",
    dropLibrary: "Drop template videos or portrait photos here to add them, or", chooseFiles: "Choose files",
    open: "Open", remove: "Remove", delete: "Delete", download: "Download",
    needAudio: "Choose the narration first.", needTemplate: "Add at least one template.",
    oneTemplate: "Single mode takes one template: remove the others or switch to Batch.",
    uploading: "Uploading {name}: {pct}%", analysing: "Analysing {name} (looking for a face)...",
    noTemplates: "No templates yet: drop some above.", ready: "face found", rejected: "not usable: {reason}",
    seconds: "{n} s", photo: "photo",
    summary: "{done} of {total} done", eta: "about {t} left", finishedIn: "finished",
    st_queued: "waiting", st_starting: "starting", "st_downloading narration": "fetching the narration",
    "st_downloading template": "fetching the template", "st_analysing face": "analysing the face",
    st_rendering: "rendering {pct}%", "st_storing the video": "uploading", "st_storing the ZIP": "making the ZIP",
    st_succeeded: "done", st_failed: "failed", st_canceled: "canceled", st_running: "working",
    s_queued: "queued", s_running: "running", s_succeeded: "succeeded", s_partial: "partly done", s_failed: "failed",
    s_canceled: "canceled", confirmDelete: "Delete this job and its videos?",
    confirmClear: "Delete all {n} finished jobs and their videos? This cannot be undone.",
    bigZip: "This ZIP is {size} GB. Download it anyway?", noJobs: "No jobs yet.",
    confirmTemplateDelete: "Delete template {name}?", signInFailed: "That token was not accepted: {reason}",
    offline: "The gateway cannot be reached. Check your connection and try again.",
  },
  zh: {
    title: "HeyGem 数字人视频", language: "语言", signOut: "退出", signInTitle: "登录",
    signInHelp: "粘贴 API 令牌（由 heygem token create 生成）。令牌只保存在当前浏览器标签页中。",
    token: "API 令牌", signIn: "登录", batch: "批量", single: "单个", history: "历史", library: "模板库",
    narration: "1. 配音", dropAudio: "把音频文件拖到这里，或", chooseAudio: "选择音频",
    templates: "2. 数字人模板", templateSingle: "2. 数字人模板（一个）",
    dropTemplates: "把模板视频或人像照片拖到这里，或", chooseTemplates: "选择文件",
    orLibrary: "或从模板库中选择：", zipToo: "同时打包为 ZIP", start: "开始生成", progress: "进度",
    cancel: "取消", downloadZip: "全部下载（ZIP）", refresh: "刷新", clearFinished: "清除已完成的任务",
    when: "时间", status: "状态", videos: "视频", deleteJob: "删除任务",
    dropLibrary: "把模板视频或人像照片拖到这里添加，或", chooseFiles: "选择文件",
    open: "打开", remove: "移除", delete: "删除", download: "下载",
    needAudio: "请先选择配音。", needTemplate: "请至少添加一个模板。",
    oneTemplate: "单个模式只能用一个模板：请移除其他模板，或切换到批量模式。",
    uploading: "正在上传 {name}：{pct}%", analysing: "正在分析 {name}（查找人脸）…",
    noTemplates: "还没有模板：请在上方拖入。", ready: "已识别人脸", rejected: "不可用：{reason}",
    seconds: "{n} 秒", photo: "照片",
    summary: "已完成 {done} / {total}", eta: "预计还需 {t}", finishedIn: "已完成",
    st_queued: "排队中", st_starting: "开始", "st_downloading narration": "获取配音",
    "st_downloading template": "获取模板", "st_analysing face": "分析人脸",
    st_rendering: "渲染中 {pct}%", "st_storing the video": "上传中", "st_storing the ZIP": "正在打包",
    st_succeeded: "完成", st_failed: "失败", st_canceled: "已取消", st_running: "处理中",
    s_queued: "排队中", s_running: "进行中", s_succeeded: "成功", s_partial: "部分完成", s_failed: "失败",
    s_canceled: "已取消", confirmDelete: "删除这个任务及其视频？",
    confirmClear: "删除全部 {n} 个已完成的任务及其视频？此操作无法撤销。",
    bigZip: "这个 ZIP 有 {size} GB，仍要下载吗？", noJobs: "还没有任务。",
    confirmTemplateDelete: "删除模板 {name}？", signInFailed: "令牌无效：{reason}",
    offline: "无法连接网关，请检查网络后重试。",
  },
};

const $ = (id) => document.getElementById(id);
const state = { lang: "en", token: null, audio: null, chosen: [], library: [], mode: "batch", job: null, poll: null,
                firstSeen: null, selectedJob: null };

function t(key, values = {}) {
  const text = (TEXT[state.lang][key] ?? TEXT.en[key] ?? key);
  return text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("templates-title").textContent = t(state.mode === "single" ? "templateSingle" : "templates");
  $("language").value = state.lang;
  renderChosen(); renderPicker(); renderLibrary();
  if (state.job) renderRun(state.job);
  if (!$("history").hidden) loadHistory();
}

// --- the API ---------------------------------------------------------------------------------

class ApiError extends Error {}

async function api(method, path, body) {
  let answer;
  try {
    answer = await fetch(path, { method, body, headers: { Authorization: `Bearer ${state.token}`,
      ...(body && !(body instanceof FormData) ? { "Content-Type": "application/json" } : {}) } });
  } catch (error) {
    throw new ApiError(t("offline"));
  }
  if (answer.status === 204) return null;
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    if (answer.status === 401 && path !== "/api/v1/templates") signOut();
    throw new ApiError(data.detail || `${answer.status} ${answer.statusText}`);
  }
  return data;
}

function upload(path, form, onProgress) {
  // XMLHttpRequest: fetch cannot report upload progress.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    request.setRequestHeader("Authorization", `Bearer ${state.token}`);
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(Math.round(100 * event.loaded / event.total));
    request.upload.onload = () => onProgress(100);
    request.onload = () => {
      let data = {};
      try { data = JSON.parse(request.responseText); } catch (error) { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) resolve(data);
      else reject(new ApiError(data.detail || `${request.status} ${request.statusText}`));
    };
    request.onerror = () => reject(new ApiError(t("offline")));
    request.send(form);
  });
}

function notice(message) {
  $("notice").textContent = message || "";
}

async function guarded(action) {
  notice("");
  try {
    return await action();
  } catch (error) {
    notice(error instanceof ApiError ? error.message : String(error));
    return undefined;
  }
}

// --- sign-in ---------------------------------------------------------------------------------

async function signIn(token) {
  state.token = token.trim();
  try {
    const { templates } = await api("GET", "/api/v1/templates");
    state.library = templates;
  } catch (error) {
    state.token = null;
    $("sign-in-error").textContent = t("signInFailed", { reason: error.message });
    return;
  }
  sessionStorage.setItem("heygem-token", state.token);
  $("sign-in-error").textContent = "";
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("tenant").textContent = tenantOf(state.token);
  renderPicker(); renderLibrary();
  showTab("batch");
}

function tenantOf(token) {
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return claims.tenant || claims.sub || "";
  } catch (error) {
    return "";
  }
}

function signOut() {
  sessionStorage.removeItem("heygem-token");
  state.token = null;
  clearInterval(state.poll);
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("tenant").textContent = "";
  $("sign-in").hidden = false;
}

// --- tabs ------------------------------------------------------------------------------------

function showTab(name) {
  const panel = name === "single" ? "batch" : name;
  for (const tab of ["batch", "single", "history", "library"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
  for (const section of ["batch", "history", "library"]) $(section).hidden = section !== panel;
  if (name === "batch" || name === "single") {
    state.mode = name;
    $("templates-title").textContent = t(name === "single" ? "templateSingle" : "templates");
    $("template-files").multiple = name === "batch";
    $("zip").parentElement.hidden = name === "single";
  }
  if (name === "history") loadHistory();
  if (name === "library") refreshLibrary();
  notice("");
}

// --- composing a job -------------------------------------------------------------------------

function setAudio(file) {
  if (!file) return;
  state.audio = file;
  $("audio-name").textContent = `${file.name} (${(file.size / 1048576).toFixed(1)} MB)`;
  const player = $("audio-preview");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(file);
  player.hidden = false;
}

async function addTemplateFiles(files, list) {
  // Each file becomes a library template (analysed once); failures say why, in the row.
  const added = [];
  for (const file of files) {
    const row = el("li", {}, el("span", {}, file.name), el("span", { class: "state" }, ""),
                    el("progress", { max: 100, value: 0, class: "detail" }));
    list.append(row);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const template = await upload("/api/v1/templates", form, (pct) => {
        row.querySelector(".state").textContent = pct < 100 ? t("uploading", { name: "", pct }) : t("analysing", { name: "" });
        row.querySelector("progress").value = pct;
      });
      row.remove();
      added.push(template);
      if (template.status !== "ready") notice(`${template.name}: ${t("rejected", { reason: template.reason })}`);
    } catch (error) {
      row.classList.add("failed");
      row.querySelector(".state").textContent = t("st_failed");
      row.querySelector("progress").replaceWith(el("span", { class: "detail" }, error.message));
    }
  }
  await refreshLibrary();
  return added;
}

function choose(template) {
  if (template.status !== "ready") return;
  if (state.mode === "single") state.chosen = [];
  if (!state.chosen.some((c) => c.id === template.id)) state.chosen.push(template);
  renderChosen(); renderPicker();
}

function renderChosen() {
  const list = $("chosen");
  list.replaceChildren(...state.chosen.map((template) => el("li", {},
    el("span", {}, template.name),
    el("button", { type: "button", onclick: () => { state.chosen = state.chosen.filter((c) => c !== template); renderChosen(); renderPicker(); } },
       t("remove")))));
}

function thumbnail(template) {
  return template.thumbnail_url ? el("img", { src: template.thumbnail_url, alt: "", loading: "lazy" }) : el("img", { alt: "" });
}

function renderPicker() {
  const ready = state.library.filter((template) => template.status === "ready");
  $("picker").replaceChildren(...ready.map((template) => el("li", {}, el("button", {
    type: "button", "aria-pressed": String(state.chosen.some((c) => c.id === template.id)), title: template.name,
    onclick: () => choose(template) }, thumbnail(template), template.name))));
}

async function start() {
  if (!state.audio) return notice(t("needAudio"));
  if (!state.chosen.length) return notice(t("needTemplate"));
  if (state.mode === "single" && state.chosen.length > 1) return notice(t("oneTemplate"));
  const form = new FormData();
  form.append("audio", state.audio, state.audio.name);
  for (const template of state.chosen) form.append("templates", template.id);
  form.append("zip", String(state.mode === "batch" && $("zip").checked));
  $("start").disabled = true;
  $("run").hidden = false;
  $("run-player").hidden = true;
  $("run-zip").hidden = true;
  try {
    const job = await upload("/api/v1/jobs", form, (pct) => {
      $("run-summary").textContent = t("uploading", { name: state.audio.name, pct });
      $("run-bar").value = 0;
    });
    follow(job);
  } catch (error) {
    notice(error.message);
    $("run").hidden = true;
  } finally {
    $("start").disabled = false;
  }
}

// --- following a job -------------------------------------------------------------------------

function follow(job) {
  state.job = job;
  state.firstSeen = null;
  clearInterval(state.poll);
  renderRun(job);
  state.poll = setInterval(async () => {
    const current = await guarded(() => api("GET", `/api/v1/jobs/${state.job.id}`));
    if (!current) return;
    state.job = current;
    renderRun(current);
    if (!["queued", "running"].includes(current.status)) clearInterval(state.poll);
  }, 1000);
}

function stageText(item) {
  if (item.status === "running" && item.stage === "rendering" && item.frames_total) {
    return t("st_rendering", { pct: Math.floor(100 * item.frames_done / item.frames_total) });
  }
  if (item.status === "running" && item.stage) return t(`st_${item.stage}`);
  return t(`st_${item.status}`);
}

function duration(seconds) {
  if (seconds < 60) return t("seconds", { n: Math.max(1, Math.round(seconds)) });
  const minutes = Math.round(seconds / 60);
  return state.lang === "zh" ? `${minutes} 分钟` : `${minutes} min`;
}

function renderRun(job) {
  const { items_done: done, items_total: total, percent } = job.progress;
  const running = ["queued", "running"].includes(job.status);
  let text = `${t("summary", { done, total })} · ${t(`s_${job.status}`)}`;
  if (running && percent > 0) {
    // The rate seen from this page so far: no clock shared with the server is needed.
    state.firstSeen = state.firstSeen || { at: Date.now(), percent };
    const seconds = (Date.now() - state.firstSeen.at) / 1000, gained = percent - state.firstSeen.percent;
    if (seconds > 3 && gained > 0) text += ` · ${t("eta", { t: duration(seconds * (100 - percent) / gained) })}`;
  }
  $("run-summary").textContent = text;
  $("run-bar").value = percent;
  $("cancel").hidden = !running;
  $("run-items").replaceChildren(...job.items.map((item, index) => itemRow(item, index, state.chosen[index])));
  const zip = $("run-zip");
  zip.hidden = !job.archive_url;
  if (job.archive_url) zip.href = job.archive_url;
  const player = $("run-player");
  if (state.mode === "single" && job.video_urls.length && player.dataset.job !== job.id) {
    player.src = job.video_urls[0];
    player.dataset.job = job.id;
    player.hidden = false;
  }
}

function itemRow(item, index, template) {
  const name = template?.name || (state.library.find((l) => l.id === item.template) || {}).name || item.template;
  const row = el("li", { class: item.status === "succeeded" ? "done" : item.status === "failed" ? "failed" : "" },
    el("span", {}, `${index + 1}. ${name}`), el("span", { class: "state" }, stageText(item)));
  if (item.status === "running" && item.frames_total) {
    row.append(el("progress", { class: "detail", max: item.frames_total, value: item.frames_done }));
  }
  if (item.error) row.append(el("span", { class: "detail" }, item.error));
  return row;
}

// --- history ---------------------------------------------------------------------------------

async function loadHistory() {
  const data = await guarded(() => api("GET", "/api/v1/jobs?limit=100"));
  if (!data) return;
  const body = $("jobs").querySelector("tbody");
  if (!data.jobs.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "muted" }, t("noJobs"))));
    $("job-detail").hidden = true;
    return;
  }
  body.replaceChildren(...data.jobs.map((job) => el("tr", { class: job.id === state.selectedJob ? "selected" : "", "data-job": job.id },
    el("td", {}, new Date(job.created_at * 1000).toLocaleString(state.lang === "zh" ? "zh-CN" : undefined)),
    el("td", { class: `status-${job.status}` }, t(`s_${job.status}`)),
    el("td", {}, `${job.progress.items_done} / ${job.progress.items_total}`),
    el("td", {}, el("button", { type: "button", onclick: () => openJob(job) }, t("open"))))));
  state.history = data.jobs;
  const selected = data.jobs.find((job) => job.id === state.selectedJob);
  if (selected) openJob(selected);
}

function openJob(job) {
  state.selectedJob = job.id;
  for (const row of $("jobs").querySelectorAll("tbody tr")) row.classList.toggle("selected", row.dataset.job === job.id);
  $("job-detail").hidden = false;
  $("job-title").textContent = `${t(`s_${job.status}`)} · ${new Date(job.created_at * 1000).toLocaleString()}`;
  $("job-items").replaceChildren(...job.items.map((item, index) => {
    const row = itemRow(item, index);
    if (item.video_url) {
      row.append(el("video", { class: "detail", controls: true, preload: "metadata", src: item.video_url }),
                 el("a", { class: "button detail", href: item.video_url, download: `video-${index + 1}.mp4` }, t("download")));
    }
    return row;
  }));
  const zip = $("job-zip");
  zip.hidden = !job.archive_url;
  if (job.archive_url) {
    zip.href = job.archive_url;
    zip.dataset.bytes = job.archive_bytes || 0;
  }
  $("job-delete").onclick = async () => {
    if (!confirm(t("confirmDelete"))) return;
    await guarded(() => api("DELETE", `/api/v1/jobs/${job.id}`));
    state.selectedJob = null;
    $("job-detail").hidden = true;
    loadHistory();
  };
}

function warnBigZip(event) {
  const bytes = Number(event.currentTarget.dataset.bytes || 0);
  if (bytes > 2 * 1024 ** 3 && !confirm(t("bigZip", { size: (bytes / 1024 ** 3).toFixed(1) }))) event.preventDefault();
}

async function clearFinished() {
  const finished = (state.history || []).filter((job) => !["queued", "running"].includes(job.status));
  if (!finished.length || !confirm(t("confirmClear", { n: finished.length }))) return;
  for (const job of finished) await guarded(() => api("DELETE", `/api/v1/jobs/${job.id}`));
  state.selectedJob = null;
  $("job-detail").hidden = true;
  loadHistory();
}

// --- the template library --------------------------------------------------------------------

async function refreshLibrary() {
  const data = await guarded(() => api("GET", "/api/v1/templates"));
  if (!data) return;
  state.library = data.templates;
  state.chosen = state.chosen.filter((c) => state.library.some((l) => l.id === c.id));
  renderPicker(); renderLibrary(); renderChosen();
}

function renderLibrary() {
  const cards = state.library.map((template) => {
    const facts = template.duration ? t("seconds", { n: template.duration.toFixed(1) }) : t("photo");
    return el("li", {}, thumbnail(template),
      el("div", { class: "name" }, template.name),
      el("div", { class: "muted" }, `${template.width}×${template.height} · ${facts}`),
      el("div", { class: template.status === "ready" ? "" : "rejected" },
         template.status === "ready" ? t("ready") : t("rejected", { reason: template.reason })),
      el("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(t("confirmTemplateDelete", { name: template.name }))) return;
        await guarded(() => api("DELETE", `/api/v1/templates/${template.id}`));
        refreshLibrary();
      } }, t("delete")));
  });
  $("templates").replaceChildren(...(cards.length ? cards : [el("li", { class: "muted" }, t("noTemplates"))]));
}

// --- drag and drop ---------------------------------------------------------------------------

function dropZone(zone, input, onFiles) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    onFiles([...event.dataTransfer.files]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { onFiles([...input.files]); input.value = ""; });
}

document.addEventListener("DOMContentLoaded", () => {
  const preferred = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  state.lang = sessionStorage.getItem("heygem-lang") || preferred;
  applyLanguage();
  $("language").addEventListener("change", (event) => {
    state.lang = event.target.value;
    sessionStorage.setItem("heygem-lang", state.lang);
    applyLanguage();
  });
  $("sign-in-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token").value); });
  $("sign-out").addEventListener("click", signOut);
  for (const tab of ["batch", "single", "history", "library"]) $(`tab-${tab}`).addEventListener("click", () => showTab(tab));
  dropZone($("audio-drop"), $("audio-file"), (files) => setAudio(files.find((f) => f.type.startsWith("audio") || /\.(wav|mp3|m4a|ogg|flac)$/i.test(f.name)) || files[0]));
  dropZone($("template-drop"), $("template-files"), async (files) => {
    const added = await addTemplateFiles(state.mode === "single" ? files.slice(0, 1) : files, $("chosen"));
    added.forEach(choose);
  });
  dropZone($("library-drop"), $("library-files"), (files) => addTemplateFiles(files, $("uploads")));
  $("start").addEventListener("click", start);
  $("cancel").addEventListener("click", () => guarded(async () => renderRun(await api("POST", `/api/v1/jobs/${state.job.id}/cancel`))));
  $("refresh").addEventListener("click", loadHistory);
  $("clear-finished").addEventListener("click", clearFinished);
  $("job-zip").addEventListener("click", warnBigZip);
  const saved = sessionStorage.getItem("heygem-token");
  if (saved) signIn(saved);
});
