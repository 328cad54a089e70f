import { render } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { api, call } from "./api/client";
import { href, navigate, useRoute, type Route } from "./router";
import { session, useUser } from "./session";
import { GoalsPage, NewGoalPage } from "./pages/goals";
import { GoalPage } from "./pages/goal";
import { LoginPage, RegisterPage } from "./pages/auth";
import { AccountPage } from "./pages/account";
import { PayoutPage } from "./pages/payout";
import { MyContributionsPage, PaymentReturnPage } from "./pages/payments";
import "./styles.css";

function page(route: Route) {
  const [first, second] = route.path;
  if (!first) return <GoalsPage route={route} />;
  if (first === "goals" && second === "new") return <NewGoalPage />;
  if (first === "goals" && second) return <GoalPage goalId={second} route={route} />;
  if (first === "login") return <LoginPage route={route} />;
  if (first === "register") return <RegisterPage route={route} />;
  if (first === "account") return <AccountPage />;
  if (first === "payout") return <PayoutPage route={route} />;
  if (first === "contributions") return <MyContributionsPage route={route} />;
  if (first === "payments" && second === "return") return <PaymentReturnPage route={route} />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page here. <a href={href()}>See the goals</a>.
      </p>
    </section>
  );
}

async function logOut() {
  try {
    await call(api.DELETE("/v1/sessions/current"));
  } catch {
    // Signed out here either way: a token the server already forgot is no loss.
  }
  session.clear();
  navigate(href());
}

function App() {
  const route = useRoute();
  const user = useUser();
  const main = useRef<HTMLElement>(null);
  const key = route.path.join("/");
  // A new page moves keyboard and screen-reader focus to its content, as a page load would.
  useEffect(() => {
    main.current?.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }, [key]);
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), main.current?.focus())}>
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href()}>
          GoFund
        </a>
        <nav aria-label="Main">
          <ul>
            <li>
              <a href={href()}>Goals</a>
            </li>
            {user ? (
              <>
                <li>
                  <a href={href("goals", "new")}>New goal</a>
                </li>
                <li>
                  <a href={href("contributions")}>My contributions</a>
                </li>
                <li>
                  <a href={href("payout")}>Payout account</a>
                </li>
                <li>
                  <a href={href("account")} data-testid="account-link">
                    {user.username}
                  </a>
                </li>
                <li>
                  <button type="button" class="link" onClick={() => void logOut()}>
                    Log out
                  </button>
                </li>
              </>
            ) : (
              <>
                <li>
                  <a href={href("login")}>Log in</a>
                </li>
                <li>
                  <a href={href("register")}>Register</a>
                </li>
              </>
            )}
          </ul>
        </nav>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {page(route)}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
