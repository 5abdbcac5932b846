using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using Analytics.Review.Reviewers;
using Analytics.Store;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Analytics.Review.Tests;

/// <summary>
/// Issue 13, item 8, over real HTTP: the login throttle holds under concurrency, the return URL after a
/// login stays on this site, the cookie is Secure behind a trusted TLS proxy only, and API tokens expire
/// and can be revoked one by one.
/// </summary>
public sealed class SecurityTests
{
    private readonly ReviewServer _server;

    public SecurityTests(ReviewServer server) => _server = server;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Uri U(string path) => new(path, UriKind.Relative);

    [Fact]
    public async Task ParallelWrongPasswords_ForOneName_AtMostTheBudgetAreChecked_TheRestGet429()
    {
        await _server.Reviewers.AddAsync("race-target", "right-password", "viewer", Ct);
        const int attempts = 24;

        // Each guess from an address of its own, so that only the per-name budget (3 here) can stop them;
        // every form is fetched first, so that the posts themselves race.
        var clients = Enumerable.Range(0, attempts).Select(i => ReviewClient.Create(_server, IPAddress.Parse($"127.0.1.{10 + i}"))).ToList();
        try
        {
            var forms = await Task.WhenAll(clients.Select(c => c.LoginFormAsync("race-target", "wrong-guess")));
            using var go = new ManualResetEventSlim();
            var posts = clients.Zip(forms).Select(p => Task.Run(async () =>
            {
                go.Wait(Ct);
                using var response = await p.First.Http.PostAsync(U("/login"), p.Second, Ct);
                return response.StatusCode;
            }, Ct)).ToList();
            go.Set();
            var statuses = await Task.WhenAll(posts);

            var checkedCount = statuses.Count(s => s == HttpStatusCode.Unauthorized);
            Assert.True(checkedCount is >= 1 and <= 3, $"{checkedCount} passwords were checked for one name; the budget is 3 ({string.Join(", ", statuses)})");
            Assert.Equal(attempts - checkedCount, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    public static TheoryData<string> HostileReturnUrls() =>
    [
        "/\t/evil.example",
        "/\\evil.example",
        "/\\/evil.example",
        "//evil.example",
        "///evil.example",
        "/%09/evil.example",
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "/\r\n/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
        "/\u00a0/evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        " /queue",
        "evil.example",
        "~//evil.example",
    ];

    [Theory]
    [MemberData(nameof(HostileReturnUrls))]
    public async Task Login_WithAHostileReturnUrl_GoesToTheQueue(string returnUrl)
    {
        using var client = ReviewClient.Create(_server);
        using var login = await client.LoginAsync("vic", ReviewServer.ViewerPassword, returnUrl);
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        Assert.Equal("/queue", login.Headers.Location?.OriginalString);
    }

    [Fact]
    public async Task LoginPage_DoesNotCarryAHostileReturnUrlIntoItsForm_ButKeepsALocalOne()
    {
        using var client = ReviewClient.Create(_server);
        Assert.DoesNotContain("evil.example", await client.PageAsync("/login?returnUrl=" + Uri.EscapeDataString("/\t/evil.example")), StringComparison.Ordinal);
        Assert.Contains("name=\"returnUrl\" value=\"/queue?class", await client.PageAsync("/login?returnUrl=" + Uri.EscapeDataString("/queue?class=harvester")), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Login_WithANulInTheForm_IsABadRequest_NotAServerError()
    {
        using var client = ReviewClient.Create(_server);
        using var login = await client.LoginAsync("vic", ReviewServer.ViewerPassword, "/\u0000/evil.example");
        Assert.Equal(HttpStatusCode.BadRequest, login.StatusCode);
        Assert.Null(login.Headers.Location);
    }

    [Theory]
    [InlineData("/entity?kind=user&name=mallory%40review.test")]
    [InlineData("/queue?class=harvester&range=7d")]
    [InlineData("/")]
    public async Task Login_WithALocalReturnUrl_GoesThere(string returnUrl)
    {
        using var client = ReviewClient.Create(_server);
        using var login = await client.LoginAsync("vic", ReviewServer.ViewerPassword, returnUrl);
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        Assert.Equal(returnUrl, login.Headers.Location?.OriginalString);
    }

    [Fact]
    public async Task SessionCookie_IsSecure_WhenATrustedProxySaysHttps_AndTheHeaderIsIgnoredFromAnyoneElse()
    {
        var viaProxy = await LoginCookiesAsync(IPAddress.Parse(ReviewServer.TrustedProxy));
        Assert.Contains("secure", Attributes(viaProxy, "analytics_review"));
        Assert.Contains("secure", Attributes(viaProxy, "analytics_review_csrf"));

        var untrusted = await LoginCookiesAsync(IPAddress.Parse("127.0.0.43"));
        Assert.DoesNotContain("secure", Attributes(untrusted, "analytics_review"));
        Assert.DoesNotContain("secure", Attributes(untrusted, "analytics_review_csrf"));
    }

    /// <summary>
    /// Logs in from <paramref name="source"/> claiming, in X-Forwarded-*, that the request came in over
    /// HTTPS; returns every Set-Cookie. Cookies are carried by hand: a Secure one would not go back over
    /// this plain-HTTP test connection.
    /// </summary>
    private async Task<List<string>> LoginCookiesAsync(IPAddress source)
    {
        using var client = ReviewClient.Create(_server, source, useCookies: false);
        client.Http.DefaultRequestHeaders.Add("X-Forwarded-Proto", "https");
        client.Http.DefaultRequestHeaders.Add("X-Forwarded-For", "198.51.100.7");
        using var page = await client.Http.GetAsync(U("/login"), Ct);
        var cookies = page.Headers.GetValues("Set-Cookie").ToList();
        using var post = new HttpRequestMessage(HttpMethod.Post, U("/login"))
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["name"] = "vic",
                ["password"] = ReviewServer.ViewerPassword,
                ["__csrf"] = ReviewClient.Csrf(await page.Content.ReadAsStringAsync(Ct)),
            }),
        };
        post.Headers.Add("Cookie", string.Join("; ", cookies.Select(c => c.Split(';')[0])));
        using var login = await client.Http.SendAsync(post, Ct);
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        cookies.AddRange(login.Headers.GetValues("Set-Cookie"));
        return cookies;
    }

    private static List<string> Attributes(List<string> setCookies, string name)
    {
        var cookie = setCookies.Last(c => c.StartsWith(name + "=", StringComparison.Ordinal));
        return [.. cookie.Split(';').Skip(1).Select(a => a.Trim().Split('=')[0].ToLowerInvariant())];
    }

    [Fact]
    public async Task RevokedToken_Is401AtOnce_WhileTheReviewersOtherTokenStillWorks()
    {
        var first = await _server.Reviewers.IssueTokenAsync("vic", null, Ct);
        var second = await _server.Reviewers.IssueTokenAsync("vic", TimeSpan.FromDays(1), Ct);
        Assert.StartsWith(first.Id, first.Token, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, await MeAsync(first.Token));
        Assert.Equal(HttpStatusCode.OK, await MeAsync(second.Token));

        var listed = await _server.Reviewers.ListTokensAsync("vic", Ct);
        var row = Assert.Single(listed, t => t.Id == first.Id);
        Assert.Equal("active", row.State(DateTime.UtcNow));
        Assert.InRange(row.ExpiresAt, DateTime.UtcNow.AddDays(89.9), DateTime.UtcNow.AddDays(90.1));
        Assert.NotNull(row.LastUsedAt);

        await _server.Reviewers.RevokeTokenAsync(first.Id, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeAsync(first.Token));
        Assert.Equal(HttpStatusCode.OK, await MeAsync(second.Token));
        Assert.Equal("revoked", Assert.Single(await _server.Reviewers.ListTokensAsync("vic", Ct), t => t.Id == first.Id).State(DateTime.UtcNow));

        // A leaked token can be revoked by the token itself too.
        await _server.Reviewers.RevokeTokenAsync(second.Token, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeAsync(second.Token));
    }

    [Fact]
    public async Task Token_ExpiresAfterTheDefaultLifetime_AndNoneOutlivesTheMaximum()
    {
        // Issued 91 days ago (a store whose clock says so), with the default 90-day lifetime: expired now.
        var then = new FakeTimeProvider(DateTimeOffset.UtcNow.AddDays(-91));
        var past = new ReviewerStore(_server.Store, new PasswordHasher(1000), then, new ReviewOptions());
        var old = await past.IssueTokenAsync("vic", null, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeAsync(old.Token));
        then.Advance(TimeSpan.FromDays(2));
        var young = await past.IssueTokenAsync("vic", null, Ct);
        Assert.Equal(HttpStatusCode.OK, await MeAsync(young.Token));

        await Assert.ThrowsAsync<ArgumentException>(() => _server.Reviewers.IssueTokenAsync("vic", TimeSpan.FromDays(366), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => _server.Reviewers.IssueTokenAsync("vic", TimeSpan.Zero, Ct));
    }

    [Fact]
    public async Task TokenIssuedBeforeExpiriesExisted_ExpiresAfterTheDefaultLifetime()
    {
        // Rows as the first release wrote them: no expiry. One 100 days old (past the 90-day default), one a day old.
        var stale = await LegacyTokenAsync("vic", DateTime.UtcNow.AddDays(-100));
        var recent = await LegacyTokenAsync("vic", DateTime.UtcNow.AddDays(-1));
        Assert.Equal(HttpStatusCode.Unauthorized, await MeAsync(stale));
        Assert.Equal(HttpStatusCode.OK, await MeAsync(recent));

        // Listed with an id of their own, and revocable by it.
        var listed = Assert.Single(await _server.Reviewers.ListTokensAsync("vic", Ct), t => t.CreatedAt < DateTime.UtcNow.AddDays(-99));
        Assert.StartsWith("old_", listed.Id, StringComparison.Ordinal);
        Assert.Equal("expired", listed.State(DateTime.UtcNow));
        var recentId = Assert.Single(await _server.Reviewers.ListTokensAsync("vic", Ct), t => t.Id.StartsWith("old_", StringComparison.Ordinal) && t.State(DateTime.UtcNow) == "active").Id;
        await _server.Reviewers.RevokeTokenAsync(recentId, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeAsync(recent));
    }

    private async Task<string> LegacyTokenAsync(string name, DateTime created)
    {
        var token = "arv_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        await _server.Store.ExecuteAsync("""
            INSERT INTO reviewer_tokens (token_hash, name, created_at, expires_at, revoked, version)
            VALUES ({h:String}, {n:String}, {c:DateTime64(3)}, NULL, false, 1)
            """, QueryParameters.Of(("h", Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)))), ("n", name), ("c", created)), Ct);
        return token;
    }

    private async Task<HttpStatusCode> MeAsync(string token)
    {
        using var client = ReviewClient.Create(_server);
        client.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var response = await client.Http.GetAsync(U("/api/me"), Ct);
        return response.StatusCode;
    }
}
