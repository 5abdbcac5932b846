using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Analytics.Limits;
using Analytics.Store;
using Xunit;

namespace Analytics.Review.Tests;

/// <summary>The console over real HTTP against the Kestrel host: authentication, CSRF, rate limits, roles, actions.</summary>
public sealed class ApiTests
{
    private readonly ReviewServer _server;

    public ApiTests(ReviewServer server) => _server = server;

    private static Uri U(string path) => new(path, UriKind.Relative);

    [Fact]
    public async Task Unauthenticated_ApiIs401_PagesRedirectToLogin_OnlyLoginAndAssetsAreOpen()
    {
        using var client = ReviewClient.Create(_server);
        foreach (var path in new[] { "/api/queue", "/api/entity?kind=ip&name=127.0.0.1", "/api/me", "/api/openapi.json" })
        {
            using var r = await client.Http.GetAsync(U(path), TestContext.Current.CancellationToken);
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
        }

        using (var post = await client.Http.PostAsJsonAsync(U("/api/actions"), new { action = "release", kind = "ip", entity = "127.0.0.9", reason = "nope" }, TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, post.StatusCode);
        }

        foreach (var path in new[] { "/", "/queue", "/queue/rows", "/entity?kind=ip&name=127.0.0.1" })
        {
            using var r = await client.Http.GetAsync(U(path), TestContext.Current.CancellationToken);
            Assert.Equal(HttpStatusCode.Redirect, r.StatusCode);
            Assert.StartsWith("/login", r.Headers.Location!.IsAbsoluteUri ? r.Headers.Location.PathAndQuery : r.Headers.Location.OriginalString.Replace(_server.BaseAddress.ToString().TrimEnd('/'), "", StringComparison.Ordinal), StringComparison.Ordinal);
        }

        using (var form = await client.Http.PostAsync(U("/entity/action"), new FormUrlEncodedContent(new Dictionary<string, string> { ["action"] = "release" }), TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.Redirect, form.StatusCode);
        }

        using var bogus = new HttpRequestMessage(HttpMethod.Get, U("/api/queue"));
        bogus.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "arv_not-a-token");
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.Http.SendAsync(bogus, TestContext.Current.CancellationToken)).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await client.Http.GetAsync(U("/login"), TestContext.Current.CancellationToken)).StatusCode);
        using var css = await client.Http.GetAsync(U("/static/review.css"), TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, css.StatusCode);
        Assert.Equal("text/css", css.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Login_SetsAStrictHttpOnlySessionCookie_AndOpensTheQueue()
    {
        using var client = ReviewClient.Create(_server);
        using var login = await client.LoginAsync("ana", ReviewServer.AnalystPassword);
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        var setCookie = login.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("analytics_review=", StringComparison.Ordinal));
        Assert.Contains("httponly", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=strict", setCookie, StringComparison.OrdinalIgnoreCase);

        var queue = await client.PageAsync("/queue");
        Assert.Contains("id=\"queue-live\"", queue, StringComparison.Ordinal);
        var me = await client.Http.GetFromJsonAsync<JsonElement>(U("/api/me"), TestContext.Current.CancellationToken);
        Assert.Equal("analyst", me.GetProperty("role").GetString());
    }

    [Fact]
    public async Task PostsWithoutAValidCsrfToken_AreRefused_AndChangeNothing()
    {
        using var client = ReviewClient.Create(_server);

        // The login form itself: a forged token is refused before the password is looked at.
        _ = await client.PageAsync("/login");
        using (var forged = await client.Http.PostAsync(U("/login"), new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["name"] = "ana", ["password"] = ReviewServer.AnalystPassword, ["__csrf"] = "forged",
        }), TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.BadRequest, forged.StatusCode);
        }

        Assert.Equal(HttpStatusCode.Redirect, (await client.LoginAsync("ana", ReviewServer.AnalystPassword)).StatusCode);
        var entity = "127.254.253.201";
        var fields = new Dictionary<string, string> { ["action"] = "limit", ["kind"] = "ip", ["entity"] = entity, ["reason"] = "csrf probe", ["messagesPerMinute"] = "1" };
        using (var noToken = await client.Http.PostAsync(U("/entity/action"), new FormUrlEncodedContent(fields), TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.BadRequest, noToken.StatusCode);
        }

        fields["__csrf"] = "CfDJ8-wrong";
        using (var wrongToken = await client.Http.PostAsync(U("/entity/action"), new FormUrlEncodedContent(fields), TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.BadRequest, wrongToken.StatusCode);
        }

        // The JSON API with the session cookie needs the token in a header.
        using (var api = await client.Http.PostAsJsonAsync(U("/api/actions"), new { action = "limit", kind = "ip", entity, reason = "csrf probe", messagesPerMinute = 1 }, TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.BadRequest, api.StatusCode);
        }

        Assert.Equal(LimitSource.Default, _server.Limits.Current(new EntityRef(EntityKind.Ip, entity)).Source);
        Assert.Equal(0UL, await AuditCount("ip", entity));

        // With the page's token the same form goes through.
        fields["__csrf"] = ReviewClient.Csrf(await client.PageAsync("/entity?kind=ip&name=" + entity));
        using var ok = await client.Http.PostAsync(U("/entity/action"), new FormUrlEncodedContent(fields), TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.Redirect, ok.StatusCode);
        Assert.Equal(1.0, _server.Limits.Current(new EntityRef(EntityKind.Ip, entity)).MessagesPerMinute);
    }

    [Fact]
    public async Task FailedLogins_AreRateLimitedPerName_AndPerIp_EvenForTheRightPassword()
    {
        await _server.Reviewers.AddAsync("rl-name", "right-password", "viewer", TestContext.Current.CancellationToken);
        using (var client = ReviewClient.Create(_server))
        {
            for (var i = 0; i < 3; i++)
            {
                Assert.Equal(HttpStatusCode.Unauthorized, (await client.LoginAsync("rl-name", "wrong" + i)).StatusCode);
            }

            using var limited = await client.LoginAsync("rl-name", "right-password");
            Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
            Assert.NotNull(limited.Headers.RetryAfter);
        }

        // Per IP: six failures for six different names from one address, then even a good login from it waits.
        using (var fromElsewhere = ReviewClient.Create(_server, IPAddress.Parse("127.0.0.77")))
        {
            for (var i = 0; i < 6; i++)
            {
                Assert.Equal(HttpStatusCode.Unauthorized, (await fromElsewhere.LoginAsync("nobody" + i, "guess")).StatusCode);
            }

            Assert.Equal(HttpStatusCode.TooManyRequests, (await fromElsewhere.LoginAsync("vic", ReviewServer.ViewerPassword)).StatusCode);
        }

        // Another address is unaffected.
        using var other = ReviewClient.Create(_server);
        Assert.Equal(HttpStatusCode.Redirect, (await other.LoginAsync("vic", ReviewServer.ViewerPassword)).StatusCode);
    }

    [Fact]
    public async Task Viewer_ReadsButCannotAct_ByFormOrByToken()
    {
        using var client = ReviewClient.Create(_server);
        Assert.Equal(HttpStatusCode.Redirect, (await client.LoginAsync("vic", ReviewServer.ViewerPassword)).StatusCode);
        var page = await client.PageAsync("/entity?kind=ip&name=127.254.253.202");
        Assert.Contains("can read but not act", page, StringComparison.Ordinal);
        using var form = await client.Http.PostAsync(U("/entity/action"), new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["action"] = "release", ["kind"] = "ip", ["entity"] = "127.254.253.202", ["reason"] = "viewer tries", ["__csrf"] = ReviewClient.Csrf(page),
        }), TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.Forbidden, form.StatusCode);

        using var bearer = ReviewClient.Create(_server);
        bearer.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", (await _server.Reviewers.IssueTokenAsync("vic", null, TestContext.Current.CancellationToken)).Token);
        Assert.Equal(HttpStatusCode.OK, (await bearer.Http.GetAsync(U("/api/queue"), TestContext.Current.CancellationToken)).StatusCode);
        using var act = await bearer.Http.PostAsJsonAsync(U("/api/actions"), new { action = "release", kind = "ip", entity = "127.254.253.202", reason = "viewer tries" }, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.Forbidden, act.StatusCode);
        Assert.Equal(0UL, await AuditCount("ip", "127.254.253.202"));
    }

    [Fact]
    public async Task AnalystActions_ReachTheLimitControl_AreAudited_AndBecomeLabels()
    {
        var user = "mallory@review.test";
        await InsertVerdict("user", user, "compromised");
        using var client = ReviewClient.Create(_server);
        client.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", (await _server.Reviewers.IssueTokenAsync("ana", TimeSpan.FromHours(1), TestContext.Current.CancellationToken)).Token);
        var entity = new EntityRef(EntityKind.User, user);

        // In the queue, open.
        var queue = await client.Http.GetFromJsonAsync<JsonElement>(U("/api/queue?status=open&limit=1000"), TestContext.Current.CancellationToken);
        Assert.Contains(queue.GetProperty("items").EnumerateArray(), i => i.GetProperty("entity").GetString() == user && i.GetProperty("status").GetString() == "open");
        Assert.True(queue.GetProperty("countsByClass").GetProperty("compromised").GetInt64() >= 1);

        // No reason: refused, nothing changes.
        using (var noReason = await client.Http.PostAsJsonAsync(U("/api/actions"), new { action = "confirm", kind = "user", entity = user, reason = " " }, TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.BadRequest, noReason.StatusCode);
        }

        Assert.Equal(LimitSource.Default, _server.Limits.Current(entity).Source);

        // Confirm (block): blocked at once, audited, labelled compromised.
        using (var confirm = await client.Http.PostAsJsonAsync(U("/api/actions"), new { action = "confirm", kind = "user", entity = user, reason = "sent spam from three countries" }, TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.OK, confirm.StatusCode);
        }

        Assert.True(_server.Limits.Current(entity).Blocked);
        Assert.Equal("ana", _server.Limits.Current(entity).SetBy);
        var label = await _server.Store.QueryAsync("SELECT class, source FROM labels FINAL WHERE entity_kind = 'user' AND entity = {e:String} AND campaign = 'review'",
            QueryParameters.Of(("e", user)), TestContext.Current.CancellationToken);
        Assert.Equal(["compromised", "review"], label.Rows.Single().Select(x => (string)x!));

        // Manual limit, then release.
        using (var limit = await client.Http.PostAsJsonAsync(U("/api/actions"), new { action = "limit", kind = "user", entity = user, reason = "let them send slowly", messagesPerMinute = 2, recipientsPerMessage = 5 }, TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.OK, limit.StatusCode);
        }

        Assert.Equal(2.0, _server.Limits.Current(entity).MessagesPerMinute);
        Assert.Equal(5, _server.Limits.Current(entity).RecipientsPerMessage);
        using (var release = await client.Http.PostAsJsonAsync(U("/api/actions"), new { action = "release", kind = "user", entity = user, reason = "owner reset the password" }, TestContext.Current.CancellationToken))
        {
            Assert.Equal(HttpStatusCode.OK, release.StatusCode);
        }

        Assert.True(_server.Limits.Current(entity).IsNormal);

        // The trail: who, what, why, newest first; the queue shows the latest status.
        var evidence = await client.Http.GetFromJsonAsync<JsonElement>(U("/api/entity?kind=user&name=" + Uri.EscapeDataString(user)), TestContext.Current.CancellationToken);
        var actions = evidence.GetProperty("actions").EnumerateArray().ToList();
        Assert.Equal(["release", "limit", "confirm"], actions.Select(a => a.GetProperty("action").GetString()));
        Assert.All(actions, a => Assert.Equal("ana", a.GetProperty("reviewer").GetString()));
        Assert.Equal("sent spam from three countries", actions[2].GetProperty("reason").GetString());
        Assert.Equal("released", evidence.GetProperty("status").GetString());
        Assert.Equal(3UL, await AuditCount("user", user));
        var released = await client.Http.GetFromJsonAsync<JsonElement>(U("/api/queue?status=released&limit=1000"), TestContext.Current.CancellationToken);
        Assert.Contains(released.GetProperty("items").EnumerateArray(), i => i.GetProperty("entity").GetString() == user);
    }

    [Fact]
    public async Task DisabledReviewer_LosesTokenAndSession()
    {
        await _server.Reviewers.AddAsync("leaver", "leaver-pass", "analyst", TestContext.Current.CancellationToken);
        var token = (await _server.Reviewers.IssueTokenAsync("leaver", null, TestContext.Current.CancellationToken)).Token;
        using var session = ReviewClient.Create(_server);
        Assert.Equal(HttpStatusCode.Redirect, (await session.LoginAsync("leaver", "leaver-pass")).StatusCode);
        using var bearer = ReviewClient.Create(_server);
        bearer.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await bearer.Http.GetAsync(U("/api/me"), TestContext.Current.CancellationToken)).StatusCode);

        await _server.Reviewers.SetEnabledAsync("leaver", false, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.Unauthorized, (await bearer.Http.GetAsync(U("/api/me"), TestContext.Current.CancellationToken)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await session.Http.GetAsync(U("/api/me"), TestContext.Current.CancellationToken)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await session.LoginAsync("leaver", "leaver-pass")).StatusCode);
    }

    [Fact]
    public async Task OpenApi_DescribesQueueEntityAndActions()
    {
        using var client = ReviewClient.Create(_server);
        client.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", (await _server.Reviewers.IssueTokenAsync("vic", null, TestContext.Current.CancellationToken)).Token);
        var doc = await client.Http.GetFromJsonAsync<JsonElement>(U("/api/openapi.json"), TestContext.Current.CancellationToken);
        Assert.StartsWith("3.", doc.GetProperty("openapi").GetString(), StringComparison.Ordinal);
        var paths = doc.GetProperty("paths");
        foreach (var p in new[] { "/api/queue", "/api/entity", "/api/actions", "/api/me" })
        {
            Assert.True(paths.TryGetProperty(p, out _), p);
        }
    }

    private async Task<ulong> AuditCount(string kind, string entity) =>
        (await _server.Store.QueryAsync("SELECT count() FROM review_actions WHERE entity_kind = {k:String} AND entity = {e:String}",
            QueryParameters.Of(("k", kind), ("e", entity)), TestContext.Current.CancellationToken)).Scalar<ulong>();

    private Task InsertVerdict(string kind, string entity, string cls) =>
        _server.Store.ExecuteAsync("""
            INSERT INTO verdicts (scored_at, entity_kind, entity, class, score, probabilities, anomaly, anomalous, flagged, explanation, reasons, model_version, node)
            VALUES ({t:DateTime64(3)}, {k:String}, {e:String}, {c:String}, 0.97, map({c:String}, 0.97), 0.1, false, true, 'test verdict', ['test verdict'], 'test', 'test')
            """, QueryParameters.Of(("t", DateTime.UtcNow.AddMinutes(-5)), ("k", kind), ("e", entity), ("c", cls)), TestContext.Current.CancellationToken);
}
