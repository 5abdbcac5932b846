using Analytics.Store;
using Analytics.Review.Actions;
using Analytics.Review.Evidence;
using Analytics.Review.Reviewers;
using Analytics.Review.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.HttpOverrides;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Review;

/// <summary>
/// Wiring for the abuse team's review console inside <c>serve</c>:
/// <code>
/// var review = ReviewOptions.FromConfiguration(builder.Configuration);   // section "Review"; serve --http → Review:Http
/// builder.WebHost.ConfigureReviewEndpoint(review);                       // Kestrel listens on Review:Http (127.0.0.1:8025)
/// builder.Services.AddReviewConsole(builder.Configuration);
/// …
/// app.MapReviewConsole();
/// </code>
/// Needs <see cref="Store.IClickHouseStore"/>, <see cref="Limits.ILimitControl"/> and <see cref="TimeProvider"/> in the container.
/// </summary>
public static class ReviewConsole
{
    public static IServiceCollection AddReviewConsole(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSectionOptions<ReviewOptions>(ReviewOptions.SectionName);
        services.AddSingleton<IValidateOptions<ReviewOptions>, ReviewOptionsValidator>();
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<ReviewOptions>>().Value;
            return new ReviewerStore(sp.GetRequiredService<Store.IClickHouseStore>(), new PasswordHasher(options.Pbkdf2Iterations), sp.GetRequiredService<TimeProvider>(), options);
        });
        services.AddSingleton<LoginThrottle>();
        services.AddSingleton<ReviewQueries>();
        services.AddSingleton<ReviewActions>();

        var review = ReviewOptions.FromConfiguration(configuration);
        var protection = services.AddDataProtection().SetApplicationName("analytics-review");
        if (!string.IsNullOrWhiteSpace(review.KeysDirectory))
        {
            protection.PersistKeysToFileSystem(new DirectoryInfo(review.KeysDirectory));
        }
        else
        {
            protection.UseEphemeralDataProtectionProvider();
        }

        services.AddAuthentication()
            .AddCookie(ReviewAuth.CookieScheme, o => ReviewAuth.ConfigureCookie(o, review))
            .AddScheme<AuthenticationSchemeOptions, BearerTokenHandler>(ReviewAuth.BearerScheme, null)
            .AddPolicyScheme(ReviewAuth.Scheme, "Review console", o => o.ForwardDefaultSelector = http =>
                http.Request.Headers.Authorization.ToString().StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
                    ? ReviewAuth.BearerScheme
                    : ReviewAuth.CookieScheme);
        services.AddAuthorizationBuilder()
            .AddPolicy(ReviewAuth.ReadPolicy, p => p.AddAuthenticationSchemes(ReviewAuth.Scheme).RequireRole(ReviewerRoles.Viewer, ReviewerRoles.Analyst))
            .AddPolicy(ReviewAuth.ActPolicy, p => p.AddAuthenticationSchemes(ReviewAuth.Scheme).RequireRole(ReviewerRoles.Analyst));
        services.AddAntiforgery(o =>
        {
            o.Cookie.Name = "analytics_review_csrf";
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.HttpOnly = true;
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
            o.FormFieldName = "__csrf";
            o.HeaderName = "X-CSRF-Token";
        });
        return services;
    }

    /// <summary>Makes Kestrel listen on <see cref="ReviewOptions.Http"/> (nothing when the console is disabled).</summary>
    public static IWebHostBuilder ConfigureReviewEndpoint(this IWebHostBuilder webHost, ReviewOptions options)
    {
        if (options.Enabled)
        {
            var endpoint = options.ParseHttp();
            webHost.ConfigureKestrel(k => k.Listen(endpoint));
        }

        return webHost;
    }

    public static WebApplication MapReviewConsole(this WebApplication app)
    {
        var options = app.Services.GetRequiredService<IOptions<ReviewOptions>>().Value;
        UseTrustedProxies(app, options);

        // The console answers on TCP only; the same Kestrel also serves the admin Unix socket, where it does not exist.
        app.Use((http, next) =>
        {
            if (http.GetEndpoint()?.Metadata.GetMetadata<ReviewEndpointMarker>() is not null && http.Connection.LocalPort == 0)
            {
                http.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            }

            return next(http);
        });
        app.UseAuthentication();
        app.UseAuthorization();
        ReviewEndpoints.Map(app);
        if (options.Enabled)
        {
            var endpoint = options.ParseHttp();
            var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Review");
            app.Lifetime.ApplicationStarted.Register(() =>
            {
                ReviewLog.Listening(log, "http://" + endpoint);
                if (!System.Net.IPAddress.IsLoopback(endpoint.Address))
                {
                    ReviewLog.NotLoopback(log, endpoint.ToString());
                }
            });
        }

        return app;
    }

    /// <summary>
    /// X-Forwarded-For and X-Forwarded-Proto, believed only from <see cref="ReviewOptions.TrustedProxies"/>
    /// (ASP.NET's own default trusts loopback; here nothing is trusted unless configured), and only on TCP
    /// connections (a Unix-socket peer has no address to check). A request that reached a trusted proxy over
    /// HTTPS then counts as HTTPS, so the cookies (SameAsRequest) get Secure; the client address becomes
    /// the forwarded one, so the login throttle counts clients, not the proxy. The chain is walked from the
    /// nearest hop and stops at the first address that is not a trusted proxy.
    /// </summary>
    private static void UseTrustedProxies(WebApplication app, ReviewOptions options)
    {
        var (proxies, networks) = options.ParseTrustedProxies();
        if (proxies.Count == 0 && networks.Count == 0)
        {
            return;
        }

        var forwarded = new ForwardedHeadersOptions
        {
            ForwardedHeaders = ForwardedHeaders.XForwardedFor | ForwardedHeaders.XForwardedProto,
            ForwardLimit = null,
        };
        forwarded.KnownProxies.Clear();
        forwarded.KnownIPNetworks.Clear();
        foreach (var proxy in proxies)
        {
            forwarded.KnownProxies.Add(proxy);
        }

        foreach (var network in networks)
        {
            forwarded.KnownIPNetworks.Add(network);
        }

        app.UseWhen(http => http.Connection.RemoteIpAddress is not null, branch => branch.UseForwardedHeaders(forwarded));
    }
}

internal sealed class ReviewOptionsValidator : IValidateOptions<ReviewOptions>
{
    public ValidateOptionsResult Validate(string? name, ReviewOptions options) =>
        options.Validate() is { Count: > 0 } errors ? ValidateOptionsResult.Fail(errors) : ValidateOptionsResult.Success;
}

/// <summary>Marks the console's endpoints (so they can be kept off the admin socket).</summary>
internal sealed class ReviewEndpointMarker
{
    public static ReviewEndpointMarker Instance { get; } = new();
}

internal static partial class ReviewLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Review console at {Url}")]
    public static partial void Listening(ILogger logger, string url);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The review console listens on {Endpoint}, beyond loopback, over plain HTTP: put a TLS reverse proxy in front (and list it in Review:TrustedProxies)")]
    public static partial void NotLoopback(ILogger logger, string endpoint);
}
