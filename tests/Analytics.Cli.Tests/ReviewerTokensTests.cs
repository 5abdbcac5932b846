using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>API tokens, end to end: issued, listed and revoked one by one through the CLI while serve runs.</summary>
public sealed partial class ReviewerTokensTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Tokens_AreListedWithTheirIds_AndARevokedOneIs401AtOnce_WhileTheOtherStillWorks()
    {
        using var dir = new TempDirectory();
        var data = dir.Path;
        var port = FreePort();
        await using var serve = CliProcess.Start("serve", "--data", data, "--submission", "127.0.0.1:0", "--mx", "127.0.0.1:0", "--http", $"127.0.0.1:{port}");
        await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));

        var (code, _, stderr) = await CliProcess.RunWithInputAsync("s3cret-pass\n", "reviewers", "add", "tess", "--role", "viewer", "--data", data);
        Assert.True(code == 0, stderr);
        var (first, firstId) = await IssueAsync(data, "tess");
        var (second, secondId) = await IssueAsync(data, "tess", "--days", "7");
        Assert.NotEqual(firstId, secondId);

        // Longer than the maximum lifetime (365 days by default): refused.
        (code, _, stderr) = await CliProcess.RunAsync("reviewers", "token", "tess", "--days", "4000", "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("at most", stderr, StringComparison.Ordinal);

        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/") };
        Assert.Equal(HttpStatusCode.OK, await MeAsync(http, first));
        Assert.Equal(HttpStatusCode.OK, await MeAsync(http, second));

        var (listCode, list, listErr) = await CliProcess.RunAsync("reviewers", "tokens", "tess", "--data", data);
        Assert.True(listCode == 0, listErr);
        var firstRow = list.Split('\n').Single(l => l.StartsWith(firstId, StringComparison.Ordinal));
        var secondRow = list.Split('\n').Single(l => l.StartsWith(secondId, StringComparison.Ordinal));
        Assert.Contains("active", firstRow, StringComparison.Ordinal);
        Assert.Contains(DateTime.UtcNow.AddDays(90).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture), firstRow, StringComparison.Ordinal);
        Assert.Contains(DateTime.UtcNow.AddDays(7).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture), secondRow, StringComparison.Ordinal);
        Assert.Contains(DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture), firstRow.Split("  ", StringSplitOptions.RemoveEmptyEntries)[^1], StringComparison.Ordinal);
        Assert.DoesNotContain(first, list, StringComparison.Ordinal);

        (code, var revoked, stderr) = await CliProcess.RunAsync("reviewers", "revoke-token", firstId, "--data", data);
        Assert.True(code == 0, stderr);
        Assert.Contains(firstId, revoked, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeAsync(http, first));
        Assert.Equal(HttpStatusCode.OK, await MeAsync(http, second));

        (code, list, _) = await CliProcess.RunAsync("reviewers", "tokens", "tess", "--data", data);
        Assert.Contains("revoked", list.Split('\n').Single(l => l.StartsWith(firstId, StringComparison.Ordinal)), StringComparison.Ordinal);
        (code, _, stderr) = await CliProcess.RunAsync("reviewers", "revoke-token", "arv_nosuchid", "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("No token", stderr, StringComparison.Ordinal);
    }

    private static async Task<(string Token, string Id)> IssueAsync(string data, string name, params string[] extra)
    {
        var (code, stdout, stderr) = await CliProcess.RunAsync(["reviewers", "token", name, .. extra, "--data", data]);
        Assert.True(code == 0, stderr);
        var token = stdout.Trim();
        Assert.Matches("^arv_[A-Za-z0-9_-]{43}$", token);

        // The id is shown at issue time (on stderr, so that `$(analytics reviewers token …)` is the token alone), and is the token's prefix.
        var id = TokenId().Match(stderr) is { Success: true } m ? m.Groups[1].Value : throw new InvalidOperationException("No token id in: " + stderr);
        Assert.StartsWith(id, token, StringComparison.Ordinal);
        return (token, id);
    }

    private static async Task<HttpStatusCode> MeAsync(HttpClient http, string token)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri("api/me", UriKind.Relative));
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var response = await http.SendAsync(request, Ct);
        return response.StatusCode;
    }

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    [GeneratedRegex(@"\bid (arv_[A-Za-z0-9_-]+)")]
    private static partial Regex TokenId();
}
