from nurture import create_app

app = create_app()
