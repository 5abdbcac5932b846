using System.Net;
using Analytics.Cli.Hosting;
using Analytics.Events;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Ops.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class MetricsTests(StoreFixture fixture)
{
    [Fact]
    public async Task Metrics_ScrapedOverHttp_CountersMoveAfterEventsArePublished()
    {
        var ct = TestContext.Current.CancellationToken;
        using var spool = new TempDirectory();
        await using var sink = new EventSink(fixture.Store, new EventSinkOptions { FlushInterval = TimeSpan.FromMilliseconds(20) }, spool.Path, NullLogger<EventSink>.Instance);

        // Composed like serve: the store, the sink as the publisher, then AddMetricsEndpoint decorating it.
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.Services.AddSingleton(fixture.Store);
        builder.Services.AddSingleton(sink);
        builder.Services.AddSingleton<IEventPublisher>(sink);
        builder.Services.AddMetricsEndpoint();
        await using var app = builder.Build();
        app.MapMetrics();
        await app.StartAsync(ct);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        using var http = new HttpClient { BaseAddress = new Uri(address) };

        var before = await http.GetAsync("/metrics", ct);
        Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        Assert.StartsWith("text/plain; version=0.0.4", before.Content.Headers.ContentType!.ToString(), StringComparison.Ordinal);
        var first = await before.Content.ReadAsStringAsync(ct);
        Assert.Contains("# TYPE analytics_smtp_sessions_total counter", first, StringComparison.Ordinal);
        Assert.Contains("# TYPE analytics_events_lag_seconds gauge", first, StringComparison.Ordinal);
        var published = Value(first, "analytics_events_published_total");

        // What the listener publishes for one session: connect, a failed and a good AUTH, a rejected RCPT, close.
        var publisher = app.Services.GetRequiredService<IEventPublisher>();
        var at = DateTimeOffset.UtcNow;
        SmtpEvent E(EventKind kind, ushort code = 0, EventOutcome outcome = EventOutcome.None, string mechanism = "") => new()
        {
            Timestamp = at, Node = "test", Role = ListenerRole.Submission, SessionId = 7, Kind = kind, ClientIp = IPAddress.Parse("127.0.0.9"),
            ReplyCode = code, Outcome = outcome, Mechanism = mechanism, User = "alice",
        };
        Assert.True(publisher.Publish(E(EventKind.Connect, 220, EventOutcome.Ok)));
        publisher.Publish(E(EventKind.Auth, 535, EventOutcome.Reject, "PLAIN"));
        publisher.Publish(E(EventKind.Auth, 235, EventOutcome.Ok, "PLAIN"));
        publisher.Publish(E(EventKind.Rcpt, 550, EventOutcome.Reject));
        publisher.Publish(E(EventKind.Close));
        Assert.True(await sink.FlushAsync(ct));

        var text = await http.GetStringAsync("/metrics", ct);
        Assert.Equal(1, Value(text, "analytics_smtp_sessions_total{role=\"submission\"}"));
        Assert.Equal(1, Value(text, "analytics_smtp_auth_total{mechanism=\"PLAIN\",outcome=\"reject\"}"));
        Assert.Equal(1, Value(text, "analytics_smtp_auth_total{mechanism=\"PLAIN\",outcome=\"ok\"}"));
        Assert.Equal(1, Value(text, "analytics_smtp_replies_total{role=\"submission\",code=\"550\"}"));
        Assert.Equal(1, Value(text, "analytics_smtp_replies_total{role=\"submission\",code=\"535\"}"));
        Assert.Equal(published + 5, Value(text, "analytics_events_published_total"));
        Assert.True(Value(text, "analytics_events_inserted_total") >= 5, text);
        Assert.Equal(1, Value(text, "analytics_store_healthy"));

        // The limits table is read through the store (0 rows in force here, but the query worked).
        Assert.Equal(1, Value(text, "analytics_limits_query_ok"));
        await app.StopAsync(ct);
    }

    [Fact]
    public async Task Metrics_WithBearerToken_RefusesAScrapeWithoutIt()
    {
        var ct = TestContext.Current.CancellationToken;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.Configuration["Metrics:BearerToken"] = "s3cret";
        builder.Services.AddMetricsEndpoint();
        await using var app = builder.Build();
        app.MapMetrics();
        await app.StartAsync(ct);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        using var http = new HttpClient { BaseAddress = new Uri(address) };

        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/metrics", ct)).StatusCode);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        request.Headers.Authorization = new("Bearer", "s3cret");
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(request, ct)).StatusCode);
        await app.StopAsync(ct);
    }

    private static double Value(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
            {
                return double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }
}
