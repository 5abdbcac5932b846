using Analytics.Review.Web;
using Xunit;

namespace Analytics.Review.Tests;

/// <summary>Where a login may send the browser next: the same table as the HTTP test, and more.</summary>
public sealed class ReturnUrlTests
{
    [Theory]
    [MemberData(nameof(SecurityTests.HostileReturnUrls), MemberType = typeof(SecurityTests))]
    [InlineData("")]
    [InlineData(null)]
    [InlineData("/\u0000/evil.example")]
    [InlineData("/%00/evil.example")]
    [InlineData("/\u202e/evil.example")]
    [InlineData("/%E2%80%AE/x")]
    public void IsLocal_HostileUrl_IsRefused(string? url) => Assert.False(ReturnUrl.IsLocal(url));

    [Theory]
    [InlineData("/")]
    [InlineData("/queue")]
    [InlineData("/queue?class=harvester&range=7d")]
    [InlineData("/entity?kind=user&name=mallory%40review.test")]
    [InlineData("/entity?kind=net&name=192.0.2.0%2F24")]
    public void IsLocal_PathOnThisSite_IsAccepted(string url) => Assert.True(ReturnUrl.IsLocal(url));
}
