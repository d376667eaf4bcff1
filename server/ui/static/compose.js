// Compose a broadcast: every content kind (text, the eight media by URL, file_id or upload,
// albums, copies), the audience (ids, every user, tags and languages), a schedule, paid
// sending with a Stars budget, and variants when the API takes them. "Preview" renders the
// message as one chosen user would receive it (POST /v1/preview); a refused send shows each
// problem+json violation at its field.

import { api, botNames } from "./api.js";
import { clearErrors, field, h, showErrors, toast } from "./dom.js";
import { bubble } from "./telegram.js";

const KINDS = [
  ["text", "Text"], ["photo", "Photo"], ["video", "Video"], ["animation", "Animation (GIF)"],
  ["document", "Document"], ["audio", "Audio"], ["voice", "Voice"], ["video_note", "Video note"],
  ["sticker", "Sticker"], ["album", "Album (2–10 items)"], ["copy", "Copy of a message"],
];
const NO_CAPTION = new Set(["sticker", "video_note"]);
const CONTENT = ["message", "media_type", "media_url", "parse_mode", "entities", "reply_markup", "album", "source"];
/** A send's content fields: with variants they move into the first one. */
const SHARED = ["parse_mode", "reply_markup"];
/** What every other variant takes from the content above. */

function option([value, text]) {
  return h("option", { value, text });
}

function toBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function composePage(main) {
  const idempotencyKey = crypto.randomUUID();
  const bots = botNames();
  const bot = h("select", { name: "bot" }, bots.map((b) => option([b, b])));
  const kind = h("select", { name: "media_type" }, KINDS.map(option));
  const text = h("textarea", { name: "message", rows: "6" });
  const parseMode = h("select", { name: "parse_mode" }, [["", "Plain text"], ["html", "HTML"], ["markdown_v2", "MarkdownV2"]].map(option));
  const personalize = h("input", { type: "checkbox", name: "personalize" });
  const sourceUrl = h("input", { type: "radio", name: "media_source", value: "url", checked: true });
  const sourceFile = h("input", { type: "radio", name: "media_source", value: "file" });
  const mediaUrl = h("input", { type: "text", name: "media_url", inputmode: "url", placeholder: "https://… or a file_id" });
  const mediaFile = h("input", { type: "file", name: "media" });
  const buttons = h("textarea", { name: "reply_markup", rows: "2", placeholder: "Open the shop | https://example.com/shop" });
  const silent = h("input", { type: "checkbox", name: "disable_notification" });
  const protect = h("input", { type: "checkbox", name: "protect_content" });
  const trackClicks = h("input", { type: "checkbox", name: "track_clicks" });
  const fromChat = h("input", { type: "text", inputmode: "numeric", name: "from_chat_id" });
  const messageId = h("input", { type: "text", inputmode: "numeric", name: "message_id" });
  const audience = ["ids", "all", "filter"].map((value, i) =>
    h("input", { type: "radio", name: "audience", value, checked: i === 0 }));
  const userIds = h("textarea", { name: "user_ids", rows: "3", placeholder: "111 222 333" });
  const tags = h("input", { type: "text", name: "tags", placeholder: "vip, beta" });
  const languages = h("input", { type: "text", name: "language_codes", placeholder: "en, de" });
  const sendAt = h("input", { type: "datetime-local", name: "send_at" });
  const paid = h("input", { type: "checkbox", name: "allow_paid_broadcast" });
  const maxStars = h("input", { type: "number", name: "max_stars", min: "1", step: "1" });
  const previewUser = h("input", { type: "text", inputmode: "numeric", name: "preview_user" });
  const previewBox = h("div", { class: "preview", "aria-live": "polite" });
  const summary = h("div", { class: "form-error", tabindex: "-1", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", text: "Send broadcast" });
  const albumList = h("ol", { class: "album" });
  const variantsList = h("ol", { class: "variants" });
  const variantsBox = h("fieldset", { hidden: true }, h("legend", { text: "Variants (A/B/n)" }),
    h("p", { class: "hint", text: "With variants, the content above is the first one; each other is its own text (with the same formatting and buttons). A user of a variant's languages gets it; everyone else gets one of those without languages, by weight." }),
    variantsList,
    h("div", { class: "inline" },
      h("button", { type: "button", text: "Add a variant", onclick: () => addVariant() }),
      h("button", { type: "button", class: "link danger", text: "Remove the last variant", onclick: () => { variantsList.lastElementChild?.remove(); syncVariants(); } })));
  const previewVariant = h("select", { name: "variant" });

  const labelled = (control, label) => h("label", { class: "check" }, control, ` ${label}`);
  const hide = (el) => { el.hidden = true; return el; };
  const hideField = hide;
  const mediaBox = h("fieldset", {}, h("legend", { text: "Media" }),
    h("div", { class: "radios", role: "radiogroup", "aria-label": "Media from" },
      labelled(sourceUrl, "URL or file_id"), labelled(sourceFile, "Upload a file")),
    field("Media URL or file_id", mediaUrl, { name: "media_url" }),
    field("File", mediaFile, { name: "media", hint: "Photos up to 10 MB, other files up to 50 MB." }));
  // Items are added and removed at the end only, so each keeps its index (errors name it).
  const albumBox = h("fieldset", { hidden: true }, h("legend", { text: "Album items" }), albumList,
    h("div", { class: "inline" },
      h("button", { type: "button", text: "Add an item", onclick: () => addAlbumItem() }),
      h("button", { type: "button", class: "link danger", text: "Remove the last item", onclick: () => albumList.lastElementChild?.remove() })));
  const copyBox = h("fieldset", { hidden: true }, h("legend", { text: "Message to copy" }),
    field("From chat id", fromChat, { name: "source.from_chat_id" }),
    field("Message id", messageId, { name: "source.message_id" }));
  const idsField = field("User ids", userIds, { name: "user_ids", hint: "Telegram chat ids, separated by spaces, commas or lines." });
  const filterBox = h("div", { hidden: true },
    field("Tags (any of)", tags, { name: "filter.tags" }),
    field("Language codes (any of)", languages, { name: "filter.language_codes" }));
  const textField = field("Text", text, { name: "message", hint: "Up to 4096 characters; a caption up to 1024. With personalization, {first_name} and friends are filled in per user." });

  const form = h("form", { class: "compose", novalidate: true, "aria-labelledby": "compose-title" },
    h("h1", { id: "compose-title", text: "Compose a broadcast" }),
    summary,
    h("div", { class: "columns" },
      h("div", {},
        h("fieldset", {}, h("legend", { text: "Content" }),
          bots.length > 1 ? field("Bot", bot, { name: "bot" }) : null,
          field("Kind", kind, { name: "media_type" }),
          textField,
          field("Formatting", parseMode, { name: "parse_mode" }),
          labelled(personalize, "Personalize ({first_name}, {username}, …)")),
        mediaBox, albumBox, copyBox,
        h("fieldset", {}, h("legend", { text: "Buttons and options" }),
          field("URL buttons", buttons, { name: "reply_markup", hint: "One button per line: label | https://link" }),
          labelled(silent, "Send silently"), labelled(protect, "Protect content (no forwarding or saving)"),
          hide(labelled(trackClicks, "Track clicks on the links and URL buttons"))),
        variantsBox),
      h("div", {},
        h("fieldset", {}, h("legend", { text: "Audience" }),
          h("div", { class: "radios", role: "radiogroup", "aria-label": "Audience" },
            labelled(audience[0], "These users"), labelled(audience[1], "Every active user"), labelled(audience[2], "Users by tags and language")),
          idsField, filterBox),
        h("fieldset", {}, h("legend", { text: "When and how fast" }),
          field("Send at (your local time; empty: now)", sendAt, { name: "send_at" }),
          labelled(paid, "Paid broadcast: up to 1000 messages per second, 0.1 Star per message above 30/s"),
          field("Stars budget (max_stars)", maxStars, { name: "max_stars", hint: "Once spent, the rest goes at the free rate." })),
        h("fieldset", {}, h("legend", { text: "Preview" }),
          field("As received by user id", previewUser, { name: "user_id" }),
          hideField(field("Variant", previewVariant, { name: "variant" })),
          h("button", { type: "button", text: "Preview", onclick: () => preview() }),
          previewBox),
        h("div", { class: "actions" }, submit))));
  main.append(form);

  function addAlbumItem(initial = "photo") {
    const itemKind = h("select", {}, ["photo", "video", "document", "audio"].map((k) => option([k, k])));
    itemKind.value = initial;
    const index = albumList.children.length;
    const url = h("input", { type: "text", placeholder: "https://… or a file_id" });
    const file = h("input", { type: "file" });
    const caption = h("input", { type: "text" });
    const item = h("li", { class: "album-item" },
      field(`Item ${index + 1} kind`, itemKind, { name: `album[${index}].media_type` }),
      field(`Item ${index + 1} URL or file_id`, url, { name: `album[${index}].media_url` }),
      field(`Item ${index + 1} file (instead of a URL)`, file, { name: `album[${index}].media_data` }),
      field(`Item ${index + 1} caption`, caption, { name: `album[${index}].caption` }));
    item.read = async () => {
      const entry = { media_type: itemKind.value };
      if (file.files[0]) {
        entry.media_data = await toBase64(file.files[0]);
        entry.media_filename = file.files[0].name;
      } else entry.media_url = url.value.trim();
      if (caption.value) entry.caption = caption.value;
      return entry;
    };
    albumList.append(item);
  }

  function addVariant() {
    if (!variantsList.children.length) variantsList.append(variantItem(0, "the content above"));
    variantsList.append(variantItem(variantsList.children.length, null));
    syncVariants();
  }

  /** One variant: its name, weight and languages, and its own text unless it is the content
   * above (`main`). */
  function variantItem(index, main) {
    const letter = String.fromCharCode(65 + index);
    const at = `variants[${index}]`;
    const name = h("input", { type: "text", value: letter, autocomplete: "off" });
    const weight = h("input", { type: "number", min: "0", step: "1" });
    const codes = h("input", { type: "text", placeholder: "de, pt-br" });
    const area = main ? null : h("textarea", { rows: "3" });
    const item = h("li", { class: "variant" },
      main ? h("p", { class: "hint", text: `Variant ${letter}: ${main}.` }) : null,
      field(`Variant ${letter} name`, name, { name: `${at}.name` }),
      field(`Variant ${letter} weight`, weight, { name: `${at}.weight`, hint: "Its share of the recipients without a language variant; empty: 1." }),
      field(`Variant ${letter} languages`, codes, { name: `${at}.language_codes`, hint: "Users with these language codes get it." }),
      area ? field(`Variant ${letter} text`, area, { name: `${at}.message` }) : null);
    item.read = () => ({
      name: name.value.trim(),
      ...(weight.value ? { weight: Number(weight.value) } : {}),
      ...(codes.value.trim() ? { language_codes: list(codes.value) } : {}),
      ...(area ? { message: area.value } : {}),
    });
    item.variantName = () => name.value.trim();
    name.addEventListener("change", () => syncVariants());
    return item;
  }

  function syncVariants() {
    if (variantsList.children.length === 1) variantsList.replaceChildren(); // one is no variant
    const chosen = previewVariant.value;
    previewVariant.replaceChildren(h("option", { value: "", text: "As the service would choose" }),
      ...[...variantsList.children].map((item) => h("option", { value: item.variantName(), text: item.variantName() })));
    previewVariant.value = chosen;
    if (previewVariant.selectedIndex < 0) previewVariant.selectedIndex = 0;
    previewVariant.closest(".field").hidden = !variantsList.children.length;
  }

  // Variants (#15) are offered when the served OpenAPI document's SendMessageRequest has them;
  // the content above becomes the first variant, each other one a text of its own.
  api("/openapi.json").then((doc) => {
    const props = doc?.components?.schemas?.SendMessageRequest?.properties || {};
    if (props.variants) variantsBox.hidden = false;
    if (props.track_clicks) trackClicks.closest("label").hidden = false;
  }).catch(() => {});

  function sync() {
    const k = kind.value;
    const isMedia = !["text", "album", "copy"].includes(k);
    mediaBox.hidden = !isMedia;
    albumBox.hidden = k !== "album";
    copyBox.hidden = k !== "copy";
    textField.hidden = NO_CAPTION.has(k) || k === "album";
    if (k === "album" && !albumList.children.length) { addAlbumItem(); addAlbumItem(); }
    const upload = sourceFile.checked;
    mediaUrl.closest(".field").hidden = upload;
    mediaFile.closest(".field").hidden = !upload;
    const chosen = audience.find((r) => r.checked).value;
    idsField.hidden = chosen !== "ids";
    filterBox.hidden = chosen !== "filter";
    maxStars.disabled = !paid.checked;
  }
  for (const control of [kind, sourceUrl, sourceFile, paid, ...audience]) control.addEventListener("change", sync);
  sync();

  const list = (value) => value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

  /** The send's JSON body, and client-side violations (ids that are not numbers). */
  async function build({ forPreview = false } = {}) {
    const violations = [];
    const body = {};
    const k = kind.value;
    if (bots.length > 1) body.bot = bot.value;
    if (k !== "text") body.media_type = k;
    if (!textField.hidden && text.value) body.message = text.value;
    if (parseMode.value) body.parse_mode = parseMode.value;
    if (personalize.checked) body.personalize = true;
    if (!mediaBox.hidden && !sourceFile.checked && mediaUrl.value.trim()) body.media_url = mediaUrl.value.trim();
    if (k === "album") body.album = await Promise.all([...albumList.children].map((item) => item.read()));
    if (k === "copy") {
      body.source = { from_chat_id: Number(fromChat.value), message_id: Number(messageId.value) };
    }
    const rows = buttons.value.split("\n").map((line) => line.split("|").map((s) => s.trim())).filter(([label]) => label);
    if (rows.length) body.reply_markup = { rows: rows.map(([label, url]) => ({ buttons: [{ text: label, url: url || "" }] })) };
    if (silent.checked) body.disable_notification = true;
    if (protect.checked) body.protect_content = true;
    if (trackClicks.checked) body.track_clicks = true;
    if (!variantsBox.hidden && variantsList.children.length) {
      const [first, ...others] = [...variantsList.children].map((item) => item.read());
      const shared = Object.fromEntries(SHARED.filter((key) => key in body).map((key) => [key, body[key]]));
      const content = Object.fromEntries(CONTENT.filter((key) => key in body).map((key) => [key, body[key]]));
      for (const key of CONTENT) delete body[key];
      if (sourceFile.checked && !mediaBox.hidden && mediaFile.files[0] && !forPreview) {
        content.media_data = await toBase64(mediaFile.files[0]); // with variants, in the JSON
        content.media_filename = mediaFile.files[0].name;
      }
      body.variants = [{ ...first, ...content }, ...others.map((other) => ({ ...other, ...shared }))];
    }
    if (forPreview) return { body, violations };
    const chosen = audience.find((r) => r.checked).value;
    if (chosen === "all") body.all_users = true;
    else if (chosen === "filter") body.filter = { tags: list(tags.value), language_codes: list(languages.value) };
    else {
      const ids = list(userIds.value);
      body.user_ids = [];
      ids.forEach((raw, i) => {
        if (/^-?\d{1,19}$/.test(raw)) body.user_ids.push(Number(raw));
        else violations.push({ field: `user_ids[${i}]`, message: `${raw.slice(0, 30)} is not a Telegram chat id` });
      });
    }
    if (sendAt.value) body.send_at = new Date(sendAt.value).toISOString();
    if (paid.checked) {
      body.allow_paid_broadcast = true;
      if (maxStars.value) body.max_stars = Number(maxStars.value);
    }
    body.idempotency_key = idempotencyKey;
    return { body, violations };
  }

  function formData(body, file) {
    const data = new FormData();
    for (const [key, value] of Object.entries(body)) {
      data.append(key, typeof value === "string" ? value : JSON.stringify(value));
    }
    data.append("media", file, file.name);
    return data;
  }

  /** A violation of the first variant's content is shown at the content fields above. */
  function placed(violations) {
    return (violations || []).map((v) => {
      const match = v.field.match(/^variants\[0\]\.(.*)$/);
      const key = match && match[1].split(/[.[]/)[0];
      return match && CONTENT.includes(key) ? { ...v, field: match[1] } : v;
    });
  }

  async function preview() {
    clear();
    const { body } = await build({ forPreview: true });
    const userId = previewUser.value.trim();
    if (!/^-?\d+$/.test(userId)) {
      showErrors(form, summary, { title: "Preview needs a user:", errors: [{ field: "user_id", message: "give the id of a user this bot knows" }] });
      return;
    }
    if (!mediaBox.hidden && sourceFile.checked) delete body.media_type; // the file is not sent for a preview
    try {
      const request = { message: body, user_id: Number(userId) };
      if (body.variants && previewVariant.value) request.variant = previewVariant.value;
      const answer = await api("/v1/preview", { method: "POST", body: request });
      previewBox.replaceChildren(bubble({
        text: answer.text, parseMode: answer.parse_mode, mediaType: kind.value,
        mediaLabel: sourceFile.checked ? mediaFile.files[0]?.name : mediaUrl.value,
        albumCaptions: answer.album_captions, buttons: (body.reply_markup?.rows || []).map((r) => r.buttons),
        botName: body.bot || bots[0] || "",
      }));
    } catch (failure) {
      previewBox.replaceChildren();
      if (failure.errors?.length) {
        failure.errors = placed(failure.errors.map((v) => ({ ...v, field: v.field.replace(/^message\./, "") })));
        showErrors(form, summary, failure);
      } else showErrors(form, summary, { title: "No preview:", errors: [{ field: "user_id", message: failure.explain ? failure.explain() : String(failure) }] });
    }
  }

  function clear() {
    clearErrors(form, summary);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear();
    const { body, violations } = await build();
    if (violations.length) {
      showErrors(form, summary, { title: "Fix these before sending:", errors: violations });
      return;
    }
    submit.disabled = true;
    submit.textContent = "Sending…";
    try {
      const file = !mediaBox.hidden && sourceFile.checked && !body.variants ? mediaFile.files[0] : null;
      const answer = file
        ? await api("/v1/broadcasts", { method: "POST", form: formData(body, file) })
        : await api("/v1/broadcasts", { method: "POST", body });
      toast(`Broadcast #${answer.broadcast_id} ${answer.status}: ${answer.total} recipients`);
      location.hash = `#/broadcasts/${answer.broadcast_id}`;
    } catch (failure) {
      if (failure.status === 403) showErrors(form, summary, { title: "Not allowed:", errors: [{ field: "", message: failure.explain() }] });
      else showErrors(form, summary, { title: "The service refused the broadcast:", errors: placed(failure.errors), detail: failure.explain ? failure.explain() : String(failure) });
    } finally {
      submit.disabled = false;
      submit.textContent = "Send broadcast";
    }
  });
}
