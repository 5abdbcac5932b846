using System.Security.Claims;
using System.Text.Encodings.Web;
using Analytics.Review.Reviewers;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Review.Web;

/// <summary>
/// Two ways in: a cookie session for the pages (HttpOnly, SameSite=Strict, absolute lifetime) and a
/// bearer token for the API. The <see cref="Scheme"/> policy scheme picks the bearer handler when an
/// Authorization header is present, else the cookie. No default scheme is set for the app: only the
/// console's endpoints ask for these schemes, so nothing else served by the same host changes.
/// </summary>
internal static class ReviewAuth
{
    public const string Scheme = "Review";
    public const string CookieScheme = "ReviewCookie";
    public const string BearerScheme = "ReviewBearer";
    public const string ReadPolicy = "review:read";
    public const string ActPolicy = "review:act";
    public const string CookieName = "analytics_review";

    public static ClaimsPrincipal Principal(Reviewer reviewer, string scheme) => new(new ClaimsIdentity(
        [new Claim(ClaimTypes.Name, reviewer.Name), new Claim(ClaimTypes.Role, reviewer.Role)], scheme, ClaimTypes.Name, ClaimTypes.Role));

    public static bool IsApi(HttpRequest request) => request.Path.StartsWithSegments("/api", StringComparison.Ordinal);

    public static bool ViaBearer(HttpContext http) => http.User.Identity?.AuthenticationType == BearerScheme;

    public static void ConfigureCookie(CookieAuthenticationOptions o, ReviewOptions review)
    {
        o.Cookie.Name = CookieName;
        o.Cookie.HttpOnly = true;
        o.Cookie.SameSite = SameSiteMode.Strict;
        o.Cookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.SameAsRequest;
        o.Cookie.Path = "/";
        o.ExpireTimeSpan = review.SessionLifetime;
        o.SlidingExpiration = false;
        o.LoginPath = "/login";
        o.LogoutPath = "/logout";
        o.ReturnUrlParameter = "returnUrl";
        o.Events = new CookieAuthenticationEvents
        {
            OnRedirectToLogin = ctx =>
            {
                if (IsApi(ctx.Request))
                {
                    ctx.Response.StatusCode = StatusCodes.Status401Unauthorized;
                    return Task.CompletedTask;
                }

                ctx.Response.Redirect(ctx.RedirectUri);
                return Task.CompletedTask;
            },
            OnRedirectToAccessDenied = ctx =>
            {
                ctx.Response.StatusCode = StatusCodes.Status403Forbidden;
                return Task.CompletedTask;
            },

            // A disabled reviewer, or one whose role changed, is out at the next request, not at the end of the session.
            OnValidatePrincipal = async ctx =>
            {
                var store = ctx.HttpContext.RequestServices.GetService(typeof(ReviewerStore)) as ReviewerStore;
                var name = ctx.Principal?.Identity?.Name;
                var reviewer = store is null || name is null ? null : await store.GetAsync(name, ctx.HttpContext.RequestAborted);
                if (reviewer is not { Enabled: true } || !ctx.Principal!.IsInRole(reviewer.Role))
                {
                    ctx.RejectPrincipal();
                    await ctx.HttpContext.SignOutAsync(CookieScheme);
                }
            },
        };
    }
}

/// <summary><c>Authorization: Bearer arv_…</c>, resolved against reviewer_tokens on every request.</summary>
internal sealed class BearerTokenHandler : AuthenticationHandler<AuthenticationSchemeOptions>
{
    private readonly ReviewerStore _reviewers;

    public BearerTokenHandler(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder, ReviewerStore reviewers)
        : base(options, logger, encoder) => _reviewers = reviewers;

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string? header = Request.Headers.Authorization;
        if (header is null || !header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return AuthenticateResult.NoResult();
        }

        var reviewer = await _reviewers.ResolveTokenAsync(header["Bearer ".Length..].Trim(), Context.RequestAborted);
        return reviewer is null
            ? AuthenticateResult.Fail("Unknown, expired or revoked token.")
            : AuthenticateResult.Success(new AuthenticationTicket(ReviewAuth.Principal(reviewer, ReviewAuth.BearerScheme), ReviewAuth.BearerScheme));
    }

    protected override Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status401Unauthorized;
        Response.Headers.WWWAuthenticate = "Bearer realm=\"analytics-review\"";
        return Task.CompletedTask;
    }
}
