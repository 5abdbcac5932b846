using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using Analytics.Review.Evidence;

namespace Analytics.Review.Web;

/// <summary>Who is looking, and the CSRF token for the page's forms.</summary>
internal sealed record PageContext(string? Reviewer, string? Role, string CsrfToken)
{
    public bool CanAct => Role == Reviewers.ReviewerRoles.Analyst;
}

/// <summary>
/// The console's HTML: plain server-rendered pages, one stylesheet, one small script for refresh and
/// progressive niceties. Everything from the store or the reviewer goes through <see cref="H"/>.
/// </summary>
internal static class Pages
{
    public static readonly string[] Classes = [.. ThreatClasses.Malicious.Select(c => c.ToText()), "anomaly"];
    private static readonly string[] ConfirmClasses = [.. ThreatClasses.Malicious.Select(c => c.ToText())];

    public static readonly string[] Ranges = ["1h", "6h", "24h", "7d", "30d"];

    public static string H(string? text) => HtmlEncoder.Default.Encode(text ?? "");

    public static string U(string? text) => Uri.EscapeDataString(text ?? "");

    public static string T(DateTime t) => t.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) + "Z";

    public static string EntityUrl(string kind, string name) => $"/entity?kind={U(kind)}&name={U(name)}";

    public static string Layout(string title, PageContext page, string body, string? bodyClass = null)
    {
        var sb = new StringBuilder();
        sb.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        sb.Append("<title>").Append(H(title)).Append(" · Review</title><link rel=\"stylesheet\" href=\"/static/review.css\"><script src=\"/static/review.js\" defer></script></head>");
        sb.Append("<body").Append(bodyClass is null ? "" : $" class=\"{bodyClass}\"").Append("><header class=\"top\"><a class=\"brand\" href=\"/queue\">Abuse review</a>");
        if (page.Reviewer is not null)
        {
            sb.Append("<nav><a href=\"/queue\">Queue</a><a href=\"/api/openapi.json\">API</a></nav><div class=\"who\">")
                .Append(H(page.Reviewer)).Append(" <span class=\"role\">").Append(H(page.Role)).Append("</span>")
                .Append("<form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"__csrf\" value=\"").Append(H(page.CsrfToken))
                .Append("\"><button type=\"submit\" class=\"link\">Log out</button></form></div>");
        }

        sb.Append("</header><main>").Append(body).Append("</main></body></html>");
        return sb.ToString();
    }

    public static string Login(PageContext page, string? returnUrl, string? error, string? name) =>
        Layout("Log in", page, $"""
            <section class="login">
              <h1>Log in</h1>
              {(error is null ? "" : $"<p class=\"error\" role=\"alert\">{H(error)}</p>")}
              <form method="post" action="/login">
                <input type="hidden" name="__csrf" value="{H(page.CsrfToken)}">
                <input type="hidden" name="returnUrl" value="{H(returnUrl)}">
                <label>Name <input name="name" autocomplete="username" required autofocus value="{H(name)}"></label>
                <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
                <button type="submit">Log in</button>
              </form>
              <p class="hint">Accounts are created on the server: <code>analytics reviewers add NAME --role analyst</code>.</p>
            </section>
            """, "login-page");

    public static string Error(PageContext page, string title, string message) =>
        Layout(title, page, $"<section><h1>{H(title)}</h1><p class=\"error\">{H(message)}</p><p><a href=\"/queue\">Back to the queue</a></p></section>");

    public static string Queue(PageContext page, QueueFilter filter, string range, QueuePage queue, TimeSpan refresh)
    {
        var sb = new StringBuilder();
        sb.Append("<h1>Queue</h1><form class=\"filters\" method=\"get\" action=\"/queue\" id=\"filters\">");
        sb.Append("<label>Class <select name=\"class\"><option value=\"\">all</option>");
        foreach (var c in Classes.Union(queue.CountsByClass.Keys))
        {
            sb.Append(CultureInfo.InvariantCulture, $"<option value=\"{H(c)}\"{(c == filter.Class ? " selected" : "")}>{H(c)}</option>");
        }

        sb.Append("</select></label><label>Status <select name=\"status\"><option value=\"\">all</option>");
        foreach (var s in ReviewStatus.All)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<option value=\"{s}\"{(s == filter.Status ? " selected" : "")}>{s}</option>");
        }

        sb.Append("</select></label><label>Flagged in the last <select name=\"range\">");
        foreach (var r in Ranges)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<option value=\"{r}\"{(r == range ? " selected" : "")}>{r}</option>");
        }

        sb.Append("<option value=\"custom\"").Append(range == "custom" ? " selected" : "").Append(">custom</option></select></label>");
        sb.Append(CultureInfo.InvariantCulture, $"<label>From <input type=\"datetime-local\" name=\"from\" value=\"{(range == "custom" ? filter.From.ToString("yyyy-MM-ddTHH:mm", CultureInfo.InvariantCulture) : "")}\"></label>");
        sb.Append(CultureInfo.InvariantCulture, $"<label>To <input type=\"datetime-local\" name=\"to\" value=\"{(range == "custom" ? filter.To.ToString("yyyy-MM-ddTHH:mm", CultureInfo.InvariantCulture) : "")}\"></label>");
        sb.Append("<button type=\"submit\">Apply</button></form>");
        sb.Append(CultureInfo.InvariantCulture, $"<p class=\"refresh\">Refreshes every {refresh.TotalSeconds:0} s · <span id=\"updated\">updated {queue.To:HH:mm:ss}Z</span></p>");
        sb.Append(CultureInfo.InvariantCulture, $"<section id=\"queue-live\" data-refresh=\"{(int)refresh.TotalMilliseconds}\">").Append(QueueRows(queue, filter)).Append("</section>");
        return Layout("Queue", page, sb.ToString());
    }

    /// <summary>The part of the queue that refreshes: counts and rows.</summary>
    public static string QueueRows(QueuePage queue, QueueFilter filter)
    {
        var sb = new StringBuilder();
        sb.Append("<ul class=\"counts\">");
        var total = queue.CountsByClass.Values.Sum();
        sb.Append(CultureInfo.InvariantCulture, $"<li class=\"{(string.IsNullOrEmpty(filter.Class) ? "on" : "")}\"><span class=\"n\">{total}</span> all</li>");
        foreach (var (c, n) in queue.CountsByClass)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<li class=\"cls-{H(c)}{(c == filter.Class ? " on" : "")}\" data-class=\"{H(c)}\"><span class=\"n\">{n}</span> {H(c)}</li>");
        }

        sb.Append("</ul>");
        if (queue.Items.Count == 0)
        {
            sb.Append("<p class=\"empty\">Nothing flagged matches these filters.</p>");
            return sb.ToString();
        }

        sb.Append("<table class=\"queue\"><thead><tr><th>Risk</th><th>Entity</th><th>Class</th><th>Score</th><th>Anomaly</th><th>First seen</th><th>Last seen</th><th>Verdicts</th><th>Status</th><th>Why</th></tr></thead><tbody>");
        foreach (var i in queue.Items)
        {
            var pct = (int)Math.Round(Math.Clamp(i.Score, 0, 1) * 100);
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-entity=\"{H(i.Kind)}:{H(i.Entity)}\"><td><span class=\"risk\"><span class=\"bar w{pct / 10 * 10}\"></span></span></td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td><span class=\"kind\">{H(i.Kind)}</span> <a class=\"entity\" href=\"{EntityUrl(i.Kind, i.Entity)}\">{H(i.Entity)}</a></td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td><span class=\"cls cls-{H(i.Class)}\">{H(i.Class)}</span></td><td>{i.Score:0.00}</td><td>{i.Anomaly:0.00}</td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td>{T(i.FirstSeen)}</td><td>{T(i.LastSeen)}</td><td>{i.Verdicts}</td><td><span class=\"status st-{i.Status}\">{i.Status}</span></td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td class=\"why\" title=\"{H(i.Explanation)}\">{H(Truncate(i.Explanation, 140))}</td></tr>");
        }

        sb.Append("</tbody></table>");
        return sb.ToString();
    }

    public static string Entity(PageContext page, EntityEvidence e, string? done, string? error)
    {
        var sb = new StringBuilder();
        // What is judged is the latest flagged verdict; a later normal one only says the activity stopped.
        var latest = e.Verdicts.FirstOrDefault(v => v.Flagged) ?? (e.Verdicts.Count > 0 ? e.Verdicts[0] : null);
        sb.Append(CultureInfo.InvariantCulture, $"<p class=\"crumbs\"><a href=\"/queue\">← Queue</a></p><h1><span class=\"kind\">{H(e.Kind)}</span> {H(e.Entity)} <span class=\"status st-{e.Status}\" id=\"status\">{e.Status}</span></h1>");
        if (done is not null)
        {
            sb.Append("<p class=\"done\" role=\"status\">Done: ").Append(H(done)).Append(". It is in force now and in the audit trail below.</p>");
        }

        if (error is not null)
        {
            sb.Append("<p class=\"error\" role=\"alert\">").Append(H(error)).Append("</p>");
        }

        sb.Append("<div class=\"grid\"><section class=\"card\"><h2>Why it was flagged</h2>");
        if (latest is null)
        {
            sb.Append("<p class=\"empty\">No verdicts for this entity.</p>");
        }
        else
        {
            sb.Append(CultureInfo.InvariantCulture, $"<p>{(latest.Flagged ? "Latest flagged verdict" : "Latest verdict")} {T(latest.ScoredAt)}: <span class=\"cls cls-{H(latest.Class)}\">{H(latest.Class)}</span> score {latest.Score:0.00}, anomaly {latest.Anomaly:0.00} <span class=\"muted\">(model {H(latest.ModelVersion)})</span></p>");
            sb.Append("<ul class=\"reasons\">");
            foreach (var r in latest.Reasons)
            {
                sb.Append("<li>").Append(H(r)).Append("</li>");
            }

            sb.Append("</ul>");
        }

        sb.Append("<h3>Against its own baseline</h3><table class=\"baseline\"><thead><tr><th>Measure</th><th>Hour before the verdict</th><th>Usual hour (7 days)</th><th></th></tr></thead><tbody>");
        foreach (var b in e.Baseline)
        {
            var ratio = b.UsualHour > 0 ? b.LastHour / b.UsualHour : (b.LastHour > 0 ? double.PositiveInfinity : 1);
            var note = ratio >= 3 ? (double.IsPositiveInfinity(ratio) ? "new" : $"×{ratio:0.#}") : "";
            sb.Append(CultureInfo.InvariantCulture, $"<tr class=\"{(ratio >= 3 ? "hot" : "")}\"><td>{H(b.Measure)}</td><td>{b.LastHour:0.##}</td><td>{b.UsualHour:0.##}</td><td>{note}</td></tr>");
        }

        sb.Append("</tbody></table></section>");

        sb.Append("<section class=\"card\"><h2>Limits in force</h2>").Append(LimitSummary(e.Limit));
        if (e.LimitHistory.Count > 0)
        {
            sb.Append("<h3>Changes</h3><table class=\"limits\"><thead><tr><th>When</th><th>Level</th><th>Source</th><th>By</th><th>Why</th><th>Expires</th></tr></thead><tbody>");
            foreach (var l in e.LimitHistory)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{T(l.SetAt)}</td><td>{H(l.Level)}{(l.Blocked ? " (blocked)" : "")}</td><td>{H(l.Source)}</td><td>{H(l.SetBy)}</td><td>{H(l.Reason)}</td><td>{(l.ExpiresAt is { } x ? T(x) : "")}</td></tr>");
            }

            sb.Append("</tbody></table>");
        }

        sb.Append("</section></div>");
        sb.Append("<section class=\"card wide\"><h2>Timeline</h2>").Append(TimelineChart.Render(e.TimelineFrom, e.TimelineTo, e.Timeline)).Append("</section>");
        sb.Append(Actions(page, e, latest));
        sb.Append("<section class=\"card wide\"><h2>Verdict history</h2>");
        if (e.Verdicts.Count == 0)
        {
            sb.Append("<p class=\"empty\">None.</p>");
        }
        else
        {
            sb.Append("<table class=\"verdicts\"><thead><tr><th>Scored</th><th>Class</th><th>Score</th><th>Anomaly</th><th>Flagged</th><th>Reasons</th><th>Model</th></tr></thead><tbody>");
            foreach (var v in e.Verdicts)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{T(v.ScoredAt)}</td><td><span class=\"cls cls-{H(v.Class)}\">{H(v.Class)}</span></td><td>{v.Score:0.00}</td><td>{v.Anomaly:0.00}</td><td>{(v.Flagged ? "yes" : "no")}</td><td>{H(string.Join("; ", v.Reasons))}</td><td>{H(v.ModelVersion)}</td></tr>");
            }

            sb.Append("</tbody></table>");
        }

        sb.Append("</section><section class=\"card wide\"><h2>Recent sessions</h2>");
        if (e.Sessions.Count == 0)
        {
            sb.Append("<p class=\"empty\">No sessions in the 24 hours before the latest verdict.</p>");
        }

        foreach (var s in e.Sessions)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<details class=\"session\"><summary>{T(s.Start)} · {H(s.Role)} from {H(s.ClientIp)}{(s.User.Length > 0 ? " as " + H(s.User) : "")} · {s.Events.Count} events · {(s.End - s.Start).TotalSeconds:0.#} s</summary>");
            sb.Append("<table class=\"events\"><thead><tr><th>Time</th><th>Event</th><th>Outcome</th><th>Reply</th><th>Detail</th></tr></thead><tbody>");
            foreach (var ev in s.Events)
            {
                var detail = string.Join(" ", new[] { ev.User.Length > 0 && ev.Kind == "auth" ? "user " + ev.User : "", ev.Sender.Length > 0 && ev.Kind == "mail" ? "from " + ev.Sender : "", ev.Recipient.Length > 0 ? "to " + ev.Recipient : "", ev.Detail }.Where(x => x.Length > 0));
                sb.Append(CultureInfo.InvariantCulture, $"<tr class=\"o-{H(ev.Outcome)}\"><td>{ev.Ts:HH:mm:ss.fff}</td><td>{H(ev.Kind)}</td><td>{H(ev.Outcome)}</td><td>{(ev.ReplyCode == 0 ? "" : ev.ReplyCode.ToString(CultureInfo.InvariantCulture))} {H(ev.Status)}</td><td>{H(detail)}</td></tr>");
            }

            sb.Append("</tbody></table></details>");
        }

        sb.Append("</section><section class=\"card wide\"><h2>Review trail</h2>");
        if (e.Actions.Count == 0)
        {
            sb.Append("<p class=\"empty\">No review actions yet.</p>");
        }
        else
        {
            sb.Append("<table class=\"audit\" id=\"audit\"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Class</th><th>Why</th><th>Details</th></tr></thead><tbody>");
            foreach (var a in e.Actions)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{T(a.At)}</td><td>{H(a.Reviewer)}</td><td>{H(a.Action)}</td><td>{H(a.Class)}</td><td>{H(a.Reason)}</td><td><code>{H(a.Details)}</code></td></tr>");
            }

            sb.Append("</tbody></table>");
        }

        sb.Append("</section>");
        return Layout($"{e.Kind}:{e.Entity}", page, sb.ToString());
    }

    private static string LimitSummary(LimitView l)
    {
        var parts = new List<string>();
        if (l.Blocked)
        {
            parts.Add("blocked");
        }

        if (l.AuthLocked)
        {
            parts.Add("AUTH locked");
        }

        if (l.MessagesPerMinute is { } m)
        {
            parts.Add($"{m:0.##} messages/min");
        }

        if (l.RecipientsPerHour is { } r)
        {
            parts.Add($"{r:0.##} recipients/h");
        }

        if (l.RecipientsPerMessage is { } rm)
        {
            parts.Add($"{rm} recipients/message");
        }

        if (l.TarpitSeconds > 0)
        {
            parts.Add($"tarpit {l.TarpitSeconds:0.#} s");
        }

        var what = parts.Count == 0 ? (l.Source == "override" ? "no limit (allowlisted)" : "no limit beyond the defaults") : string.Join(", ", parts);
        return $"<p id=\"limit\" data-level=\"{H(l.Level)}\" data-source=\"{H(l.Source)}\"><strong>{H(l.Level)}</strong> ({H(l.Source)}): {H(what)}</p>"
            + (l.SetBy.Length > 0 ? $"<p class=\"muted\">Set by {H(l.SetBy)} at {T(l.SetAt)}{(l.ExpiresAt is { } x ? ", until " + T(x) : "")}: {H(l.Reason)}</p>" : "");
    }

    private static string Actions(PageContext page, EntityEvidence e, VerdictRow? latest)
    {
        if (!page.CanAct)
        {
            return "<section class=\"card wide\"><h2>Actions</h2><p class=\"muted\">Your role (viewer) can read but not act.</p></section>";
        }

        string Hidden(string action) =>
            $"<input type=\"hidden\" name=\"__csrf\" value=\"{H(page.CsrfToken)}\"><input type=\"hidden\" name=\"kind\" value=\"{H(e.Kind)}\"><input type=\"hidden\" name=\"entity\" value=\"{H(e.Entity)}\"><input type=\"hidden\" name=\"action\" value=\"{action}\">";
        const string Reason = "<label>Reason (required) <textarea name=\"reason\" required minlength=\"3\" rows=\"2\" placeholder=\"What you saw, for the audit trail\"></textarea></label>";
        const string Rates = """
            <div class="rates"><label>Messages/min <input type="number" name="messagesPerMinute" min="0" step="any"></label>
            <label>Recipients/h <input type="number" name="recipientsPerHour" min="0" step="any"></label>
            <label>Recipients/message <input type="number" name="recipientsPerMessage" min="0" step="1"></label>
            <label>Tarpit s <input type="number" name="tarpitSeconds" min="0" max="300" step="any"></label></div>
            """;
        var cls = latest is { Flagged: true } ? latest.Class : "";
        var classOptions = string.Concat(ConfirmClasses.Union(cls.Length > 0 ? [cls] : [])
            .Select(c => $"<option value=\"{H(c)}\"{(c == cls ? " selected" : "")}>{H(c)}</option>"));
        return $"""
            <section class="card wide actions"><h2>Actions</h2><div class="action-grid">
            <form method="post" action="/entity/action" class="action confirm" id="confirm-form">{Hidden("confirm")}
              <h3>Confirm abuse</h3><p class="muted">Labels it for training and holds it back.</p>
              <label>Class <select name="class">{classOptions}</select></label>
              <label>Then <select name="mode" class="mode"><option value="block">block it</option><option value="limit">limit it (rates below)</option></select></label>
              {Rates}{Reason}<button type="submit" class="danger">Confirm</button></form>
            <form method="post" action="/entity/action" class="action dismiss" id="dismiss-form">{Hidden("dismiss")}
              <h3>Dismiss (false positive)</h3><p class="muted">Labels it benign and lifts any model limit.</p>
              <label>Allowlist for <input type="number" name="allowlistDays" min="0" max="3650" value="0" class="short"> days (0: no allowlist)</label>
              {Reason}<button type="submit">Dismiss</button></form>
            <form method="post" action="/entity/action" class="action limit" id="limit-form">{Hidden("limit")}
              <h3>Set a manual limit</h3><p class="muted">Overrides the model until released or expired.</p>
              {Rates}<label>For <input type="number" name="days" min="0" value="0" class="short"> days (0: until released)</label>
              {Reason}<button type="submit">Set limit</button></form>
            <form method="post" action="/entity/action" class="action release" id="release-form">{Hidden("release")}
              <h3>Release</h3><p class="muted">Drops overrides and model limits: back to normal now.</p>
              {Reason}<button type="submit">Release</button></form>
            </div></section>
            """;
    }

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..(max - 1)] + "…";
}
