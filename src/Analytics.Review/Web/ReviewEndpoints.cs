using System.Globalization;
using System.Reflection;
using Analytics.Limits;
using Analytics.Review.Actions;
using Analytics.Review.Evidence;
using Analytics.Review.Reviewers;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;

namespace Analytics.Review.Web;

internal sealed record MeResponse(string Name, string Role);

internal sealed record ErrorResponse(string Error);

/// <summary>
/// The console's routes. Anonymous: <c>/login</c> and <c>/static/*</c>. Everything else needs a
/// reviewer (pages redirect to the login, the API answers 401); acting needs the analyst role (403).
/// Every form post carries the antiforgery token; API posts authenticated by the session cookie carry
/// it in <c>X-CSRF-Token</c>, bearer-token posts need none (no ambient credential to abuse).
/// </summary>
internal static class ReviewEndpoints
{
    private const string Html = "text/html; charset=utf-8";

    public static void Map(WebApplication app)
    {
        var root = app.MapGroup("/").WithMetadata(ReviewEndpointMarker.Instance).AddEndpointFilter(async (ctx, next) =>
        {
            SecurityHeaders(ctx.HttpContext.Response);
            return await next(ctx);
        });

        root.MapGet("static/{file}", (string file) => Asset(file)).AllowAnonymous();
        root.MapGet("login", LoginPage).AllowAnonymous();
        root.MapPost("login", Login).AllowAnonymous().DisableAntiforgery();

        var pages = root.MapGroup("").RequireAuthorization(ReviewAuth.ReadPolicy);
        pages.MapGet("", () => Results.Redirect("/queue"));
        pages.MapGet("queue", QueuePage);
        pages.MapGet("queue/rows", QueueRows);
        pages.MapGet("entity", EntityPage);
        pages.MapPost("entity/action", EntityAction).RequireAuthorization(ReviewAuth.ActPolicy).DisableAntiforgery();
        pages.MapPost("logout", Logout).DisableAntiforgery();

        var api = root.MapGroup("api").RequireAuthorization(ReviewAuth.ReadPolicy);
        api.MapGet("me", (HttpContext http) => Results.Json(new MeResponse(http.User.Identity!.Name!, Role(http)!), ReviewJson.Default.MeResponse));
        api.MapGet("queue", ApiQueue);
        api.MapGet("entity", ApiEntity);
        api.MapPost("actions", ApiAction).RequireAuthorization(ReviewAuth.ActPolicy).DisableAntiforgery();
        api.MapGet("openapi.json", () => Asset("openapi.json"));
    }

    private static void SecurityHeaders(HttpResponse response)
    {
        var h = response.Headers;
        h.ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";
        h.XContentTypeOptions = "nosniff";
        h.XFrameOptions = "DENY";
        h["Referrer-Policy"] = "no-referrer";
        h.CacheControl = response.HttpContext.Request.Path.StartsWithSegments("/static", StringComparison.Ordinal) ? "private, max-age=300" : "no-store";
    }

    private static string? Role(HttpContext http) => http.User.IsInRole(ReviewerRoles.Analyst) ? ReviewerRoles.Analyst
        : http.User.IsInRole(ReviewerRoles.Viewer) ? ReviewerRoles.Viewer : null;

    private static PageContext Page(HttpContext http, IAntiforgery antiforgery) =>
        new(http.User.Identity?.IsAuthenticated == true ? http.User.Identity.Name : null, Role(http), antiforgery.GetAndStoreTokens(http).RequestToken ?? "");

    private static IResult Page(string html, int status = StatusCodes.Status200OK) => Results.Content(html, Html, statusCode: status);

    // ---- login ----

    // A return URL that would be refused after the login is not carried into the form either.
    private static IResult LoginPage(HttpContext http, IAntiforgery antiforgery, string? returnUrl) =>
        Page(Pages.Login(new PageContext(null, null, antiforgery.GetAndStoreTokens(http).RequestToken ?? ""), ReturnUrl.IsLocal(returnUrl) ? returnUrl : null, null, null));

    private static async Task<IResult> Login(HttpContext http, IAntiforgery antiforgery, ReviewerStore reviewers, LoginThrottle throttle, CancellationToken cancellationToken)
    {
        if (!http.Request.HasFormContentType)
        {
            return Results.BadRequest();
        }

        if (await ReadFormAsync(http.Request, cancellationToken) is not { } form)
        {
            return Page(Pages.Login(new PageContext(null, null, antiforgery.GetAndStoreTokens(http).RequestToken ?? ""), null, "The form could not be read.", null), StatusCodes.Status400BadRequest);
        }

        var name = form["name"].ToString().Trim();
        var returnUrl = form["returnUrl"].ToString();
        IResult Again(string error, int status) =>
            Page(Pages.Login(new PageContext(null, null, antiforgery.GetAndStoreTokens(http).RequestToken ?? ""), returnUrl, error, name), status);

        if (!await antiforgery.IsRequestValidAsync(http))
        {
            return Again("The form expired or did not come from this page; try again.", StatusCodes.Status400BadRequest);
        }

        // Behind a trusted proxy this is the client's address from X-Forwarded-For (ReviewConsole).
        var ip = http.Connection.RemoteIpAddress?.ToString() ?? "";
        if (throttle.TryBegin(ip, name, out var wait) is not { } attempt)
        {
            http.Response.Headers.RetryAfter = Math.Ceiling(wait.TotalSeconds).ToString(CultureInfo.InvariantCulture);
            return Again($"Too many failed logins; try again in {Math.Ceiling(wait.TotalMinutes):0} minutes.", StatusCodes.Status429TooManyRequests);
        }

        Reviewer? reviewer = null;
        try
        {
            reviewer = name.Length == 0 ? null : await reviewers.VerifyAsync(name, form["password"].ToString(), cancellationToken);
        }
        finally
        {
            // Settled even when the check throws: an attempt that was not a success counts as a failure.
            if (reviewer is null)
            {
                throttle.Failed(attempt);
            }
            else
            {
                throttle.Succeeded(attempt);
            }
        }

        if (reviewer is null)
        {
            return Again("Wrong name or password, or the account is disabled.", StatusCodes.Status401Unauthorized);
        }

        await http.SignInAsync(ReviewAuth.CookieScheme, ReviewAuth.Principal(reviewer, ReviewAuth.CookieScheme));
        return Results.Redirect(ReturnUrl.IsLocal(returnUrl) ? returnUrl : "/queue");
    }

    /// <summary>The posted form, or null when it cannot be decoded (a NUL, bad encoding, over the size limits): a bad request, not a server error.</summary>
    private static async Task<IFormCollection?> ReadFormAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        try
        {
            return await request.ReadFormAsync(cancellationToken);
        }
        catch (InvalidDataException)
        {
            return null;
        }
    }

    private static async Task<IResult> Logout(HttpContext http, IAntiforgery antiforgery)
    {
        if (!await antiforgery.IsRequestValidAsync(http))
        {
            return Page(Pages.Error(Page(http, antiforgery), "Refused", "The form did not carry a valid token."), StatusCodes.Status400BadRequest);
        }

        await http.SignOutAsync(ReviewAuth.CookieScheme);
        return Results.Redirect("/login");
    }

    // ---- queue ----

    private static QueueFilter? Filter(HttpRequest request, DateTime now, out string range, out string? error)
    {
        var q = request.Query;
        error = null;
        range = q["range"].ToString() is { Length: > 0 } r ? r : "24h";
        var cls = q["class"].ToString() is { Length: > 0 } c ? c : null;
        var status = q["status"].ToString() is { Length: > 0 } s ? s : null;
        if (status is not null && !ReviewStatus.All.Contains(status))
        {
            error = "status must be one of " + string.Join(", ", ReviewStatus.All) + ".";
            return null;
        }

        DateTime from, to = now;
        var rangeGiven = q["range"].ToString().Length > 0;
        if (TryTime(q["from"], out var f) && (!rangeGiven || range == "custom"))
        {
            from = f;
            to = TryTime(q["to"], out var t) ? t : now;
            range = "custom";
        }
        else
        {
            var span = range switch
            {
                "1h" => TimeSpan.FromHours(1),
                "6h" => TimeSpan.FromHours(6),
                "7d" => TimeSpan.FromDays(7),
                "30d" => TimeSpan.FromDays(30),
                _ => TimeSpan.FromHours(24),
            };
            range = Pages.Ranges.Contains(range) ? range : "24h";
            from = now - span;
        }

        var limit = int.TryParse(q["limit"], NumberStyles.None, CultureInfo.InvariantCulture, out var l) ? Math.Clamp(l, 1, 1000) : 200;
        return new QueueFilter(cls, status, from, to, limit);
    }

    private static bool TryTime(string? text, out DateTime time)
    {
        var ok = DateTime.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out time);
        time = DateTime.SpecifyKind(time, DateTimeKind.Utc);
        return ok && !string.IsNullOrWhiteSpace(text);
    }

    private static async Task<IResult> QueuePage(HttpContext http, IAntiforgery antiforgery, ReviewQueries queries, IOptions<ReviewOptions> options, CancellationToken cancellationToken)
    {
        var page = Page(http, antiforgery);
        if (Filter(http.Request, queries.Now, out var range, out var error) is not { } filter)
        {
            return Page(Pages.Error(page, "Bad filter", error!), StatusCodes.Status400BadRequest);
        }

        var queue = await queries.QueueAsync(filter, cancellationToken);
        return Page(Pages.Queue(page, filter, range, queue, options.Value.QueueRefresh));
    }

    private static async Task<IResult> QueueRows(HttpContext http, ReviewQueries queries, CancellationToken cancellationToken)
    {
        if (Filter(http.Request, queries.Now, out _, out var error) is not { } filter)
        {
            return Results.BadRequest(error);
        }

        return Page(Pages.QueueRows(await queries.QueueAsync(filter, cancellationToken), filter));
    }

    private static async Task<IResult> ApiQueue(HttpContext http, ReviewQueries queries, CancellationToken cancellationToken) =>
        Filter(http.Request, queries.Now, out _, out var error) is not { } filter
            ? Results.Json(new ErrorResponse(error!), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status400BadRequest)
            : Results.Json(await queries.QueueAsync(filter, cancellationToken), ReviewJson.Default.QueuePage);

    // ---- entity ----

    private static bool TryEntity(string? kind, string? name, out EntityRef entity)
    {
        entity = default;
        return EntityKinds.TryParse(kind?.Trim(), out var k) && EntityRef.TryCreate(k, name ?? "", out entity);
    }

    private static async Task<IResult> EntityPage(HttpContext http, IAntiforgery antiforgery, ReviewQueries queries, string? kind, string? name, string? done, CancellationToken cancellationToken)
    {
        var page = Page(http, antiforgery);
        if (!TryEntity(kind, name, out var entity))
        {
            return Page(Pages.Error(page, "No such entity", "Give kind (user, ip, net) and name."), StatusCodes.Status400BadRequest);
        }

        return Page(Pages.Entity(page, await queries.EntityAsync(entity, cancellationToken), done, null));
    }

    private static async Task<IResult> ApiEntity(ReviewQueries queries, string? kind, string? name, CancellationToken cancellationToken) =>
        !TryEntity(kind, name, out var entity)
            ? Results.Json(new ErrorResponse("Give kind (user, ip, net) and name."), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status400BadRequest)
            : Results.Json(await queries.EntityAsync(entity, cancellationToken), ReviewJson.Default.EntityEvidence);

    // ---- actions ----

    private static async Task<IResult> EntityAction(HttpContext http, IAntiforgery antiforgery, ReviewActions actions, ReviewQueries queries, CancellationToken cancellationToken)
    {
        if (!http.Request.HasFormContentType)
        {
            return Results.BadRequest();
        }

        if (await ReadFormAsync(http.Request, cancellationToken) is not { } form)
        {
            return Page(Pages.Error(Page(http, antiforgery), "Refused", "The form could not be read."), StatusCodes.Status400BadRequest);
        }

        if (!await antiforgery.IsRequestValidAsync(http))
        {
            return Page(Pages.Error(Page(http, antiforgery), "Refused", "The form did not carry a valid token (it may have expired): reload the page and try again."), StatusCodes.Status400BadRequest);
        }

        double? D(string key) => double.TryParse(form[key], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : null;
        int? I(string key) => int.TryParse(form[key], NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : null;
        var request = new ActionRequest
        {
            Action = form["action"].ToString(),
            Kind = form["kind"].ToString(),
            Entity = form["entity"].ToString(),
            Reason = form["reason"].ToString(),
            Class = form["class"].ToString() is { Length: > 0 } c ? c : null,
            Mode = form["mode"].ToString() is { Length: > 0 } m ? m : null,
            AllowlistDays = I("allowlistDays"),
            MessagesPerMinute = D("messagesPerMinute"),
            RecipientsPerHour = D("recipientsPerHour"),
            RecipientsPerMessage = I("recipientsPerMessage"),
            TarpitSeconds = D("tarpitSeconds"),
            Days = I("days"),
        };
        try
        {
            var result = await actions.ApplyAsync(http.User.Identity!.Name!, request, cancellationToken);
            return Results.Redirect(Pages.EntityUrl(result.Kind, result.Entity) + "&done=" + Uri.EscapeDataString(result.Action), permanent: false, preserveMethod: false);
        }
        catch (ActionRefusedException ex)
        {
            var page = Page(http, antiforgery);
            if (!TryEntity(request.Kind, request.Entity, out var entity))
            {
                return Page(Pages.Error(page, "Refused", ex.Message), StatusCodes.Status400BadRequest);
            }

            return Page(Pages.Entity(page, await queries.EntityAsync(entity, cancellationToken), null, ex.Message), StatusCodes.Status400BadRequest);
        }
    }

    private static async Task<IResult> ApiAction(HttpContext http, IAntiforgery antiforgery, ReviewActions actions, CancellationToken cancellationToken)
    {
        // A browser session's cookie goes along with any cross-site request; a bearer token does not.
        if (!ReviewAuth.ViaBearer(http) && !await antiforgery.IsRequestValidAsync(http))
        {
            return Results.Json(new ErrorResponse("Missing or invalid X-CSRF-Token header (or use a bearer token)."), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status400BadRequest);
        }

        ActionRequest? request;
        try
        {
            request = await http.Request.ReadFromJsonAsync(ReviewJson.Default.ActionRequest, cancellationToken);
        }
        catch (System.Text.Json.JsonException ex)
        {
            return Results.Json(new ErrorResponse("The body is not a valid action: " + ex.Message), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status400BadRequest);
        }
        catch (InvalidOperationException)
        {
            return Results.Json(new ErrorResponse("Send the action as application/json."), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status415UnsupportedMediaType);
        }

        if (request is null)
        {
            return Results.Json(new ErrorResponse("Empty body."), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status400BadRequest);
        }

        try
        {
            return Results.Json(await actions.ApplyAsync(http.User.Identity!.Name!, request, cancellationToken), ReviewJson.Default.ActionResult);
        }
        catch (ActionRefusedException ex)
        {
            return Results.Json(new ErrorResponse(ex.Message), ReviewJson.Default.ErrorResponse, statusCode: StatusCodes.Status400BadRequest);
        }
    }

    // ---- assets ----

    private static readonly Dictionary<string, string> ContentTypes = new(StringComparer.Ordinal)
    {
        ["review.css"] = "text/css; charset=utf-8",
        ["review.js"] = "text/javascript; charset=utf-8",
        ["openapi.json"] = "application/json; charset=utf-8",
    };

    private static readonly Dictionary<string, byte[]> Assets = ContentTypes.Keys.ToDictionary(k => k, Load, StringComparer.Ordinal);

    private static byte[] Load(string name)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Analytics.Review.Assets." + name)
            ?? throw new InvalidOperationException($"Asset {name} is not embedded.");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static IResult Asset(string file) =>
        Assets.TryGetValue(file, out var bytes) ? Results.Bytes(bytes, ContentTypes[file]) : Results.NotFound();
}
